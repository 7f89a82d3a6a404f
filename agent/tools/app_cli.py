"""python -m agent.app [VIDEO]: the browser page to draw scribbles, segment, correct and export.

    python -m agent.app clip.mp4              # then open http://127.0.0.1:8000
    python -m agent.app --port 8765 frames/   # a folder of frames
    python -m agent.app                       # open or upload a video on the page
    python -m agent.app clip.mp4 --scribbles clip-masks/scribbles.json   # continue an earlier export

--scribbles: an earlier result to continue, as agent.segment takes it (an export's scribbles.json, whose rounds
are replayed exactly, DAVIS scribble JSON, a scribble image or a folder of them; repeat it for more rounds): the
page opens with those rounds played, their strokes shown as segmented, ready for corrections, and its next
export records them before the new ones. Checked before the server starts.

The server listens on 127.0.0.1 only unless --host says otherwise: it reads and writes files wherever the
page asks, so do not expose it to a network you do not trust (another --host is a warning line at start).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from ..config import ConfigError
from ..errors import CommandParser, os_error_line
from ..paths import path_arg
from .segment_cli import (
    add_agent_arguments,
    agent_config,
    build_segmenter,
    check_sizes,
    settings_warnings,
    setup_logging,
)
from .video import DEFAULT_MAX_UPLOAD_MB, InputError

log = logging.getLogger("agent.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m agent.app", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=path_arg, nargs="?", help="video file or folder of frames to open at start")
    parser.add_argument("--scribbles", type=path_arg, action="append", default=[], metavar="S",
                        help="an earlier result to continue on VIDEO: an export's scribbles.json (its rounds), DAVIS "
                             "scribble JSON, a scribble image or a folder of them; repeatable, played in order")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest video the page may upload, in MB (default %(default)s)")
    add_agent_arguments(parser)
    return parser.parse_args(argv)


def build_state(args: argparse.Namespace):
    """The page's state with an agent built from the flags (lazily, on the first video)."""
    from ..inference.agent import InteractiveAgent
    from .webapp import AppState

    config = agent_config(args)
    return AppState(lambda: InteractiveAgent.from_pretrained(config=config), args.working_size,
                    lambda agent, frames: build_segmenter(agent, frames, args), args.max_upload_mb)


def check_listen(host: str, port: int) -> int:
    """The port the server will listen on (port 0: one the system picks now); InputError unless it could listen
    on host:port (checked before the page is announced)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    if not host.strip():  # it listened on every interface, announced as http://:PORT
        raise InputError(f"--host: {host!r} is no address: give the one to listen on (127.0.0.1: this machine only)")
    # An IPv6 address (`::1`) as uvicorn takes it: create_server's default family refused it ("Address family for
    # hostname not supported") though the server would listen there.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family) as probe:
            return probe.getsockname()[1]
    except (OSError, OverflowError) as error:
        raise InputError(f"cannot listen on {host}:{port} ({getattr(error, 'strerror', None) or error})") from error


def exposure_warning(host: str, port: int) -> str | None:
    """A warning when `host` is not this machine's loopback alone (0.0.0.0, a LAN address, a name resolving to one),
    else None: the page then answers anyone who can reach the port, and any IP address is a Host it accepts
    (asgi.foreign_host), so they may open, read and export files as this user. It started without a word."""
    try:
        addresses = {info[4][0].split("%")[0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        exposed = any(not ipaddress.ip_address(address).is_loopback for address in addresses)
    except (OSError, ValueError):  # check_listen listened there: what it resolves to is unknown, so say it
        exposed = True
    if not exposed:
        return None
    where = "every network interface" if host.strip("[]") in ("0.0.0.0", "::") else "an address other machines may reach"
    return (f"--host {host} listens on {where}: anyone who can reach port {port} can open, read and export files "
            "as this user (the page reads and writes files wherever it asks); use --host 127.0.0.1 unless every "
            "network it is on is trusted")


def page_url(host: str, port: int) -> str:
    """The address to announce: an IPv6 address in brackets (http://[::1]:8000)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from ..device import resolve_device
    from ..model.checkpoint import CheckpointError, check_checkpoint_fits, default_checkpoint_path

    try:
        if args.scribbles and args.video is None:
            raise InputError("--scribbles needs the VIDEO they were drawn on: python -m agent.app VIDEO --scribbles "
                             f"{args.scribbles[0]}")
        # The address first: a port in use or a host that is no address was found once the checkpoint was read
        # and the video's frames were being read and the model built.
        port = check_listen(args.host, args.port)
        check_sizes(args)
        config = agent_config(args)
        # The agent is built on the first video: its checkpoint and device are checked now, not then.
        check_checkpoint_fits(Path(config.checkpoint or default_checkpoint_path()))
        resolve_device(config.device)
        state = build_state(args)
        if args.video is not None:
            from .scribble_input import load_sources
            from .video import open_video

            video = open_video(args.video)  # a wrong path ends here with one line
            # Every source read and checked now, as agent.segment does: a mistake was a red line on the page.
            sources = load_sources(args.scribbles, video)
            warnings = settings_warnings(sources, video, args)
            for line in warnings:
                print(f"warning: {line}", file=sys.stderr)
            # The page shows the same warnings beside the open job's message. An export's recorded content is
            # checked once the page has read the frames.
            state.open(video, sources, warnings)
    except (InputError, ConfigError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a scribble file the file system refuses to read
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    import uvicorn

    from ..asgi import HeaderTimeoutProtocol
    from .webapp import create_app

    exposure = exposure_warning(args.host, port)
    if exposure:  # once every check has passed: an error stays one line
        print(f"warning: {exposure}", file=sys.stderr, flush=True)
    print(f"open {page_url(args.host, port)} in a browser (Ctrl+C stops the server)", flush=True)
    try:
        uvicorn.run(create_app(state), host=args.host, port=port, log_level="warning", http=HeaderTimeoutProtocol)
    finally:  # uvicorn raises the Ctrl-C again once it has stopped
        state.close()  # a running export removes what it wrote so far
    return 0


if __name__ == "__main__":
    sys.exit(main())
