"""Everything a session run depends on, checked before the model is built or any clock runs.

Building the agent takes 10-15 s and a session minutes: a bad file, a full disk or a broken strategy must
end the run before that, with one line. `check_run` checks, cheapest first: the output directory, the
checkpoint, the dataset (every file: data/validation.py) and the strategy's plans for every sequence.
Each failure raises one of PREFLIGHT_ERRORS, whose message is `<file or thing>: <what is wrong>`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, RunConfig, SessionConfig, parse_shard
from ..data.davis import DatasetError, SequenceInfo
from ..data.registry import Registration, register_dataset
from ..data.synthetic import default_dataset_root
from ..errors import one_line, os_error_line
from ..inference.plan import Strategy, StrategyError, plan_round
from ..model.checkpoint import (
    DEFAULT_CHECKPOINT,
    CheckpointError,
    check_checkpoint_fits,
    default_checkpoint_path,
)
from .outputs import OutputDirError, OutputTarget, discard, prepare_output_dir
from .session import resolve_dataset
from .sharding import shard_sequences

log = logging.getLogger(__name__)



class RemoteUnreachableError(ValueError):
    """The evaluation server named by --host does not accept a connection, or does not answer its health check."""


class PathError(ValueError):
    """A path the file system refuses (a name too long, a loop of links, no permission): `<path>: <why>`."""


PREFLIGHT_ERRORS = (DatasetError, CheckpointError, OutputDirError, StrategyError, ConfigError, PathError,
                    RemoteUnreachableError)


@dataclass
class Checked:
    registration: Registration | None  # None for a remote session: the server says which videos it plays
    output: OutputTarget


def check_checkpoint(path: Path | None) -> Path:
    """The checkpoint's path after reading it and checking its weights fit its model (they are loaded later)."""
    path = Path(path) if path is not None else default_checkpoint_path()
    check_checkpoint_fits(path)
    return path


def check_reachable(url: str, timeout: float) -> None:
    """A TCP connection to the server of `url` opens within `timeout` s: a wrong host or port ends the run
    now, not after the model is built and the framework's retries (a server that answers but fails later is
    the session's to handle)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise RemoteUnreachableError(f"--host {url}: cannot connect to {parts.hostname}:{port} "
                                     f"({error.strerror or error})") from error


def warn_plain_http(url: str) -> None:
    """A warning when the user key would cross the network unencrypted (http:// to a host not this machine)."""
    parts = urllib.parse.urlsplit(url)
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a host name
        loopback = False
    if parts.scheme == "http" and not loopback:
        log.warning("--host %s is plain HTTP: your user key is sent unencrypted to %s (https:// if the server "
                    "offers it)", url, parts.hostname)


def check_healthy(session: SessionConfig) -> None:
    """The server at session.host answers the framework's own health check (``GET <host>/api/healthcheck``): another
    web service on that port, or a URL whose path is not the server's, was a 404 once the model was built."""
    from davisinteractive.connector.remote import RemoteConnector

    from ..data import remote_compat

    remote_compat.configure(session.connect_timeout, session.read_timeout, session.retries)
    check_not_redirected(session.host)
    try:
        RemoteConnector(session.user_key, "preflight", session.host)  # its __init__ is the health check
    except remote_compat.RemoteServerError as error:
        raise RemoteUnreachableError(f"--host {session.host}: no evaluation server there ({error})") from None


HEALTHCHECK = "api/healthcheck"  # the framework's RemoteConnector.HEALTHCHECK_URL, joined to the host as it does


def check_not_redirected(host: str) -> None:
    """RemoteUnreachableError when the server redirects the health check (a server moved, http:// sent to https://,
    a path renamed): the framework follows a redirect, but re-sends a redirected POST (every round's masks) as a GET,
    and a redirect to another host drops the user key. Such a --host passed the health check, the model was built,
    and the first round was "answered GET .../api/evaluation/interaction with 405", or the samples a 401 asking for
    the user key that was given."""
    import os

    from ..data import remote_compat

    url = os.path.join(host, HEALTHCHECK)
    session = remote_compat.guarded_session()
    try:
        response = session.get(url, allow_redirects=False)
    except remote_compat.RemoteServerError as error:
        raise RemoteUnreachableError(f"--host {host}: no evaluation server there ({error})") from None
    if not response.is_redirect:
        return
    target = urllib.parse.urljoin(url, response.headers.get("location", ""))
    why = [what for what, applies in (
        ("every round's masks would be re-sent as a GET", response.status_code in (301, 302, 303)),
        ("the user key would not be sent to another host", session.should_strip_auth(url, target))) if applies]
    if not why:  # 307 or 308 on the same host: the framework's requests keep their method and key
        return
    base = target[:-len(HEALTHCHECK)].rstrip("/") if target.endswith(HEALTHCHECK) else None
    advice = f"pass --host {one_line(base)[:200]}" if base else "pass the server's own URL as --host"
    raise RemoteUnreachableError(
        f"--host {host}: the server redirects its requests ({response.status_code} to "
        f"{one_line(target)[:200]}): {advice}; followed, {' and '.join(why)}")


def check_strategy(strategy: Strategy, videos: Iterable[SequenceInfo], max_interactions: int, max_time: float) -> None:
    """Ask for every round's plan of every sequence, at the time budget a round starts with: a strategy that
    raises or returns no RoundPlan fails now, not minutes into the session. The session keeps asking its own
    instance (a stateful strategy sees each round once there); this is a fresh one when it can be built."""
    try:
        probe = type(strategy)()
    except (Exception, SystemExit):  # noqa: BLE001  (a strategy needing arguments: probe the instance itself)
        probe = strategy
    for info in videos:
        for interaction in range(1, max_interactions + 1):
            plan_round(probe, interaction, max_time * info.num_objects, info)


def check_run(config: RunConfig, strategy: Strategy, overwrite: bool = False, generated: bool = False) -> Checked:
    """Check the run's output directory, checkpoint, dataset and strategy (see the module docstring).
    `generated`: the output directory is a default name; the run's is `Checked.output.final`
    (outputs.prepare_output_dir)."""
    try:
        return _check_run(config, strategy, overwrite, generated)
    except OSError as error:  # what the checks below did not name: e.g. Path.exists() on a name too long
        raise PathError(os_error_line(error)) from error


def _check_run(config: RunConfig, strategy: Strategy, overwrite: bool, generated: bool) -> Checked:
    session = config.session
    if session.predictor == "simlearn":
        check_checkpoint(config.agent.checkpoint)
    # What --overwrite must never replace, named or not: the built-in dataset and the shipped checkpoint too.
    dataset = session.davis_root if session.davis_root is not None else default_dataset_root()
    inputs = tuple(Path(p) for p in (dataset, config.agent.checkpoint, DEFAULT_CHECKPOINT) if p is not None)
    output = prepare_output_dir(session.output_dir, overwrite, inputs, generated)
    if session.remote:  # the server holds the annotations and scribbles; its samples are known once connected
        try:
            warn_plain_http(session.host)
            check_reachable(session.host, session.connect_timeout)
            check_healthy(session)
        except BaseException:
            discard(output)
            raise
        log.info("checked: checkpoint, output %s (remote session: the data is checked once connected)", output.final)
        return Checked(None, output)
    try:
        registration = register_dataset(resolve_dataset(session), session.subset, session.sequences,
                                        session.skip_bad_sequences)
        if session.shard is not None:  # an empty shard ends here, not after the model is built
            try:
                shard_sequences(registration.infos, *parse_shard(session.shard))
            except ValueError as error:
                raise ConfigError(str(error)) from error
        check_strategy(strategy, [registration.infos[name] for name in registration.sequences],
                       session.max_interactions, session.max_time)
    except BaseException:
        discard(output)
        raise
    log.info("checked: %d sequence(s) (every frame, annotation and scribble file), output %s",
             len(registration.sequences), output.final)
    return Checked(registration, output)


def with_output_dir(config: RunConfig, path: Path) -> RunConfig:
    return dataclasses.replace(config, session=dataclasses.replace(config.session, output_dir=path))
