"""Opening a DAVIS Interactive session, in-process or against an evaluation server, and keeping its report.

Local mode registers the root's sequences with davisinteractive, then opens the framework's in-process
session. Remote mode opens the framework's own session on a server URL (its RemoteConnector, made safe by
agent/data/remote_compat.py), gets the server's samples, and registers their frames from the local root.
Both keep only the session's shard (agent/evaluation/sharding.py), and both return the protocol the
session really plays: a server's max_interactions and max_time override the client's, as the framework's
session does (and it caps them at 16 interactions and 600 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import SessionConfig, parse_shard
from ..data import remote_compat
from ..data.davis import DatasetError
from ..data.registry import Registration, register_dataset
from ..data.remote_registry import register_remote
from .sharding import shard_sequences

log = logging.getLogger(__name__)


@dataclass
class OpenedSession:
    session: object  # davisinteractive.session.DavisInteractiveSession, entered (samples fetched)
    registration: Registration  # exactly the sequences this session plays
    config: SessionConfig  # max_interactions and max_time as the evaluation plays them


def redact(record: dict) -> dict:
    """A run record without the user key (config.json is shared with results; pass --user-key again)."""
    session = record.get("session")
    if isinstance(session, dict) and session.get("user_key"):
        record = {**record, "session": {**session, "user_key": None}}
    return record


def _restrict(registration: Registration, sequences: list[str]) -> Registration:
    return dataclasses.replace(registration, sequences=list(sequences),
                               infos={name: registration.infos[name] for name in sequences})


def _local_user() -> str:
    """The in-process session's user key, as the framework names it (getpass.getuser()), or "local" where no
    user name is known (no USER/LOGNAME and a user id the system does not know, a container's `--user 1234`):
    the framework's KeyError was a traceback once the model was built. The key only files the session's rounds."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def _local(config: SessionConfig, root: Path, report_dir: Path, registration: Registration | None):
    from davisinteractive.session import DavisInteractiveSession

    if registration is None:
        registration = register_dataset(root, config.subset, config.sequences, config.skip_bad_sequences)
    if config.shard is not None:
        # Registered again with the shard's sequences only, so the framework's own summary is the shard's.
        shard = register_dataset(root, config.subset, shard_sequences(registration.infos, *parse_shard(config.shard)))
        registration = dataclasses.replace(shard, reasons={**registration.reasons, **shard.reasons})
    session = DavisInteractiveSession(
        host="localhost",
        user_key=_local_user(),
        davis_root=str(root),
        subset=config.subset,
        max_time=config.max_time,
        max_nb_interactions=config.max_interactions,
        metric_to_optimize=config.metric,
        report_save_dir=str(report_dir),
    )
    session.__enter__()  # the framework's __exit__ does nothing: entering is fetching the samples
    return session, registration


def _remote(config: SessionConfig, root: Path, report_dir: Path, registration: Registration | None):
    from davisinteractive.session import DavisInteractiveSession

    remote_compat.configure(config.connect_timeout, config.read_timeout, config.retries)
    log.info("playing the evaluation server %s (subset %s)", config.host, config.subset)
    session = DavisInteractiveSession(  # health check: ServerUnavailableError when the server is not there
        host=config.host,
        user_key=config.user_key,
        subset=config.subset,
        max_time=config.max_time,
        max_nb_interactions=config.max_interactions,
        metric_to_optimize=config.metric,  # the server's metric wins; ours is only for our summary
        report_save_dir=str(report_dir),
    )
    session.__enter__()
    samples = [(str(sequence), int(index)) for sequence, index in session.samples]
    if config.sequences is not None:
        offered = list(dict.fromkeys(sequence for sequence, _ in samples))
        unknown = [name for name in config.sequences if name not in offered]
        if unknown:
            raise DatasetError(f"the server has no sample of {', '.join(unknown)}; it offers {', '.join(offered)}")
        samples = [sample for sample in samples if sample[0] in config.sequences]
    if registration is None:
        registration = register_remote(root, config.subset, samples)
    if config.shard is not None:
        registration = _restrict(registration, shard_sequences(registration.infos, *parse_shard(config.shard)))
    # The framework's session plays session.samples in order (shuffled by its RemoteConnector).
    session.samples = [list(sample) for sample in samples if sample[0] in registration.infos]
    return session, registration


def open_session(config: SessionConfig, root: Path, report_dir: Path,
                 registration: Registration | None = None) -> OpenedSession:
    """The framework's session for `config`, entered; DatasetError/ValueError before any interaction."""
    opener = _remote if config.remote else _local
    session, registration = opener(config, Path(root), Path(report_dir), registration)
    played = dataclasses.replace(config, max_time=float(session.max_time or config.max_time),
                                 max_interactions=int(session.max_nb_interactions or config.max_interactions))
    if (played.max_time, played.max_interactions) != (config.max_time, config.max_interactions):
        log.info("the evaluation plays max_interactions=%d, max_time=%g s (asked %d, %g s)",
                 played.max_interactions, played.max_time, config.max_interactions, config.max_time)
    if config.shard is not None:
        log.info("shard %s: %d sequence(s), %d sample(s): %s", config.shard, len(registration.sequences),
                 len(session.samples), ", ".join(registration.sequences))
    return OpenedSession(session, registration, played)


class ReportKeeper:
    """The session's report as last fetched: a server that goes away mid-session loses no finished result."""

    def __init__(self, fetch) -> None:
        self._fetch = fetch
        self.last: pd.DataFrame | None = None

    def get(self) -> pd.DataFrame:
        self.last = self._fetch()
        return self.last

    def latest(self) -> pd.DataFrame:
        """A fresh report, or the last one fetched when the server cannot give it any more."""
        try:
            return self.get()
        except remote_compat.RemoteServerError as error:
            log.info("the report as last fetched is kept (%s)", error)
            if self.last is not None:
                return self.last
            from davisinteractive.storage.abstract import AbstractStorage

            return pd.DataFrame(columns=AbstractStorage.COLUMNS)


@contextlib.contextmanager
def keep_reports(session) -> Iterator[ReportKeeper]:
    """Every report fetch of `session` (the framework's own, each step, and ours) goes through a keeper."""
    keeper = ReportKeeper(session.get_report)
    session.get_report = keeper.get
    try:
        yield keeper
    finally:
        del session.get_report  # back to the framework's method
