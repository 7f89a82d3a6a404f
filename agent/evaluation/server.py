"""A local DAVIS Interactive evaluation server: the challenge's REST protocol on 127.0.0.1.

It serves the endpoints davisinteractive's own ``RemoteConnector`` calls (health check, samples,
scribbles, interaction, report, finish), keyed per user (``User-Key``) and per session (``Session-Key``):
each session has its own ``EvaluationService`` of the framework, which does all the scoring and runs the
robot, so a session played through the server scores exactly what the in-process mode scores for the
same predictions and timings. Errors are answered as the framework's client expects them (400 with the
error's class name and message); every request is logged in one line.

    python -m agent.server --davis-root ../shared/davis --port 8000      # then, elsewhere:
    python session_runner.py --host http://127.0.0.1:8000 --user-key me --davis-root ../shared/davis

Bound to 127.0.0.1 only, and answering only requests addressed to this machine (Host): the keys tell sessions
apart, they authenticate nobody.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..asgi import BodyTimeout, HeaderTimeoutProtocol, foreign_host
from ..config import ServerConfig, comma_names
from ..data import compat  # noqa: F401  (patches davisinteractive before it is imported)
from ..data.registry import register_dataset
from ..errors import CommandParser, ascii_digits, validation_problems
from ..paths import json_ready, path_arg

from davisinteractive.dataset.davis import Davis  # isort: skip  (after compat)
from davisinteractive.evaluation import EvaluationService  # isort: skip

log = logging.getLogger(__name__)

BIND_ADDRESS = "127.0.0.1"
# Error classes answered by name (the framework's client rebuilds those, agent/data/remote_compat.py).
PROTOCOL_ERRORS = (ValueError, TypeError, RuntimeError, NotImplementedError)


class ProtocolError(Exception):
    """A request the protocol refuses: answered with `status` and {"error": name, "message": [message]}."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message


def _json(value, status: int = 200) -> Response:
    # json.dumps writes floats exactly (shortest repr), so reports reach the client bit for bit.
    return Response(json.dumps(json_ready(value)), status_code=status, media_type="application/json")


def _error(status: int, name: str, message: str) -> Response:
    # The message as a list of the error's arguments: the framework's unpatched client unpacks it.
    return _json({"error": name, "message": [message]}, status)


def _shown(key: str | None, length: int) -> str:
    """A User-Key, Session-Key or path as logged: its first `length` characters, control characters escaped (a
    client may send any but CR, LF and NUL, in a path %1b: an escape sequence reached the terminal, backspaces
    erased text)."""
    text = (key or "-")[:length]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


# --- masks: the framework's batch encoding (per frame, per object a COCO compressed RLE), decoded here ----
# Not by the framework's decoder: its Cython code fails on numpy 2 (np.NPY_OWNDATA), and it trusts the run
# lengths it is sent (C without bounds checks); here every field is checked first.
# A run length of more than 7 groups (35 bits) is none of a frame's; it also keeps the sums within int64.
MAX_RLE_GROUPS = 7


def rle_counts(text: str) -> np.ndarray:
    """The run lengths (int64) of a COCO compressed RLE string (6-bit groups from '0', 5 bits of value each,
    bit 0x20: more groups follow, bit 0x10 of the last group: negative; from the 3rd run on, a delta to
    the run two before). Vectorized: character by character, Python took 0.5 s per million characters, and
    a round may send 64 MB of them."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64) - 48
    invalid = np.flatnonzero((codes < 0) | (codes >= 64))
    if invalid.size:
        raise ValueError(f"invalid character {text[invalid[0]]!r} in an RLE string of pred_masks")
    ends = np.flatnonzero((codes & 0x20) == 0)  # the last group of each value (bit 0x20 clear)
    starts = np.concatenate(([0], ends + 1))  # and after them, the groups of an unfinished value, if any
    groups = np.diff(np.concatenate((starts, [codes.size])))
    if groups.max() > MAX_RLE_GROUPS:
        raise ValueError("run length out of range in an RLE string of pred_masks")
    if groups[-1]:
        raise ValueError("truncated RLE string in pred_masks")
    if not ends.size:
        return np.zeros(0, np.int64)
    starts, groups = starts[:-1], groups[:-1]
    shifts = 5 * (np.arange(codes.size) - np.repeat(starts, groups))
    values = np.add.reduceat((codes & 0x1F) << shifts, starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * groups[negative])
    values[1::2] = np.cumsum(values[1::2])  # run i (from the 3rd on) is a delta to run i-2
    values[2::2] = np.cumsum(values[2::2])
    return values


def _decode_rle(text: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool: runs alternate background/object from background, column-major (COCO's order)."""
    # At most H*W+1 runs of at most 8 characters each: a longer text cannot be a mask of this frame.
    if len(text) > 8 * (height * width + 1):
        raise ValueError(f"an RLE of pred_masks is {len(text)} characters, too long for a {height}x{width} frame")
    counts = rle_counts(text)
    if (counts.size and counts.min() < 0) or counts.sum() != height * width:
        raise ValueError(f"an RLE of pred_masks does not cover the {height}x{width} frame exactly")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def decode_masks(encoding: dict, num_frames: int, height: int, width: int, num_objects: int) -> np.ndarray:
    """(T, H, W) int64 labels (as the in-process session submits them) from the framework's batch encoding;
    ValueError names the first field that is not what the sequence needs."""
    size = encoding.get("size") if isinstance(encoding, dict) else None
    if not isinstance(size, list) or size != [num_frames, height, width]:
        raise ValueError(f"pred_masks.size must be {[num_frames, height, width]}, got {size!r}")
    frames = encoding.get("frames")
    if not isinstance(frames, list) or len(frames) != num_frames:
        raise ValueError(f"pred_masks must have {num_frames} frames of encoded objects")
    masks = np.zeros((num_frames, height, width), np.int64)
    for index, frame in enumerate(frames):
        if not isinstance(frame, list) or len(frame) > num_objects:
            raise ValueError(f"each frame of pred_masks must list at most {num_objects} objects")
        for obj in frame:
            if not isinstance(obj, dict) or not isinstance(obj.get("counts"), str):
                raise ValueError("each object of pred_masks must be {object_id, counts}")
            object_id = obj.get("object_id")
            if not isinstance(object_id, int) or isinstance(object_id, bool) or not 1 <= object_id <= num_objects:
                raise ValueError(f"object ids of pred_masks must be in 1..{num_objects}")
            # Overlaps resolve to the larger id, as the framework's decoder does.
            np.maximum(masks[index], _decode_rle(obj["counts"], height, width) * object_id, out=masks[index])
    return masks


# --- sessions ----------------------------------------------------------------------------------------------
# Sessions kept in memory: a client's every run starts a new one (the framework's client draws a new Session-Key),
# each holds tens of kB once started and its whole per-frame report once played, and none went away. Far more
# than the clients one machine runs at once; when a new session would pass a limit, the least recently used
# finished session of that scope is closed, else one unused for SESSION_IDLE_SECONDS, else the new one is refused.
MAX_SESSIONS_PER_USER = 32
MAX_SESSIONS = 128  # of all user keys together (any non-empty User-Key is accepted without --user-key)
# A playing client asks at least once a round: a session unused this long was left (a client that crashed).
SESSION_IDLE_SECONDS = 3600.0


@dataclass
class _Session:
    service: EvaluationService
    lock: threading.Lock = field(default_factory=threading.Lock)  # a session's requests one at a time
    finished: bool = False
    spent: dict[tuple[str, int], float] = field(default_factory=dict)  # seconds per sample, accepted rounds
    used: float = field(default_factory=time.monotonic)  # the last request's time


def _session_limits() -> str:
    return (f"the server keeps at most {MAX_SESSIONS_PER_USER} sessions per user key and {MAX_SESSIONS} in all, "
            f"closing finished ones first, then ones unused for {SESSION_IDLE_SECONDS:g} s")


def _make_room(sessions: dict[tuple[str, str], _Session], user: str) -> list[tuple[str, str]]:
    """The sessions to close (each the least recently used finished one of its scope, else idle one) so that
    `user` may start one more within both limits; ProtocolError 429 when a full scope has none to close (every
    session unfinished and in use). Closes nothing itself."""
    now = time.monotonic()
    left = dict(sessions)
    closing = []
    for limit, scope, within in ((MAX_SESSIONS_PER_USER, f"user key {user[:40]!r}", lambda key: key[0] == user),
                                 (MAX_SESSIONS, "the server", lambda key: True)):
        keys = [key for key in left if within(key)]
        while len(keys) >= limit:
            finished = [key for key in keys if left[key].finished]
            candidates = finished or [key for key in keys if now - left[key].used > SESSION_IDLE_SECONDS]
            if not candidates:
                raise ProtocolError(429, "TooManySessions",
                                    f"{scope} has {len(keys)} sessions, every one unfinished and used in the last "
                                    f"{SESSION_IDLE_SECONDS:g} s ({_session_limits()}): finish one "
                                    "(POST /api/evaluation/finish) or start this one later")
            oldest = min(candidates, key=lambda key: left[key].used)
            del left[oldest]
            keys.remove(oldest)
            closing.append(oldest)
    return closing


# A round's masks come RLE-encoded (a few hundred kB for a long 480p video): far more is not a client of ours.
MAX_BODY_BYTES = 64 * 2**20
# The bodies of all requests read at once, held until each is answered: N clients each sending 64 MB held N x 64 MB.
MAX_BODY_BYTES_IN_FLIGHT = 256 * 2**20
# Strict types: JSON true or "1" would otherwise pass for 1 and be scored.
StrictNumber = Annotated[float, Field(strict=True)]


class BodyLimit:
    """ASGI middleware: a request body over MAX_BODY_BYTES is answered 413 before any route reads it, from its
    Content-Length, or, without one (Transfer-Encoding: chunked, which FastAPI would read whole into memory),
    as soon as the bytes received pass the limit; the rest is never read. A body within it is passed on (one
    that stops arriving is BodyTimeout's, around it). The bodies of the requests being read or answered at once
    may hold MAX_BODY_BYTES_IN_FLIGHT together (declared bytes counted from the start); a body that would pass
    that is answered 503 (busy: try again) unread, and its bytes are released."""

    def __init__(self, app) -> None:
        self.app = app
        self.in_flight = 0  # bytes held by requests now read or answered (one event loop: no lock)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reserved = 0

        def reserve(size: int) -> bool:
            nonlocal reserved
            if size > reserved:
                if self.in_flight + size - reserved > MAX_BODY_BYTES_IN_FLIGHT:
                    return False
                self.in_flight += size - reserved
                reserved = size
            return True

        try:
            await self._limited(scope, receive, send, reserve)
        finally:
            self.in_flight -= reserved

    async def _limited(self, scope, receive, send, reserve: Callable[[int], bool]) -> None:
        limit = f"{MAX_BODY_BYTES // 2**20} MB (a round's masks are RLE-encoded)"
        busy = _error(503, "RuntimeError", f"the server is reading {MAX_BODY_BYTES_IN_FLIGHT / 2**20:g} MB of other "
                                           "requests' bodies: try again once they are answered")
        busy.headers["retry-after"] = "1"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:  # the server reads exactly that many bytes, no more
            text = declared.decode("latin-1")
            if not ascii_digits(text) or int(text) > MAX_BODY_BYTES:  # `¹` passed isdigit(), then int() raised
                await _error(413, "ValueError", f"the request declares {text!r} bytes: at most {limit}")(scope, receive, send)
                return
            if not reserve(int(text)):
                await busy(scope, receive, send)
                return
        messages, size = [], 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                await _error(413, "ValueError", f"the request body is larger than {limit}")(scope, receive, send)
                return
            if not reserve(size):
                await busy(scope, receive, send)
                return
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay():
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


# A round's body is a few values per object and frame: JSON of many small values (a million empty lists, 3 bytes
# each) parsed into objects dozens of times its size (1.6 GB for 57 MB) and held the event loop for seconds.
MAX_JSON_VALUES = 1_000_000
# Scoring a round holds its video's masks decoded and the framework's int64 copies of them (about 400 MB for a
# 90-frame 480p video) whatever the body's size: a round of empty masks is a few hundred bytes, and 8 such rounds at
# once took 3.2 GB. Rounds past this many wait for one to be scored (the scoring is CPU-bound: none is slower).
MAX_ROUNDS_SCORED_AT_ONCE = 4


class Interaction(BaseModel):
    sequence: StrictStr
    scribble_idx: StrictInt
    pred_masks: dict
    timing: StrictNumber
    interaction: StrictInt
    next_scribble_frame_candidates: list[StrictInt] | None = None


def create_app(config: ServerConfig, root: str | Path) -> FastAPI:
    """The server for `config` on the DAVIS-format `root`, registered with davisinteractive here: its state
    is per process, so one server (one root and subset) per process."""
    registration = register_dataset(root, config.subset, config.sequences, config.skip_bad_sequences)
    root = str(registration.root)
    sessions: dict[tuple[str, str], _Session] = {}
    closed: OrderedDict[tuple[str, str], None] = OrderedDict()  # keys of sessions closed to make room (bounded)
    sessions_lock = threading.Lock()
    scoring = threading.BoundedSemaphore(MAX_ROUNDS_SCORED_AT_ONCE)  # rounds decoded and scored at once
    app = FastAPI(title="DAVIS Interactive evaluation server (local)", docs_url=None, redoc_url=None)
    app.state.registration = registration
    app.state.sessions = sessions  # read only (tests)

    app.add_middleware(BodyLimit)  # inside log_request (added after it runs first), so a 413 is logged too
    app.add_middleware(BodyTimeout, respond=lambda message: _error(408, "ValueError", message))  # around BodyLimit

    @app.middleware("http")
    async def this_machine_only(request: Request, call_next):
        # Inside log_request, outside the body's: any web page the user visits could otherwise play sessions, fill the
        # server's and read the root's scribbles by DNS rebinding (its own name resolved to 127.0.0.1, sent as Host).
        refused = foreign_host(request.headers.get("host", ""))
        if refused is not None:
            return _error(403, "Forbidden", refused)
        return await call_next(request)

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        started, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            user = _shown(request.headers.get("User-Key"), 40)
            session = _shown(request.headers.get("Session-Key"), 8)
            log.info("%s %s -> %d (%.0f ms) user=%s session=%s", request.method, _shown(request.url.path, 200), status,
                     1000 * (time.perf_counter() - started), user, session)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, error: ProtocolError) -> Response:
        return _error(error.status, error.name, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # A body FastAPI cannot parse (e.g. JSON nested too deeply) is a protocol error like any other;
        # unknown routes and methods keep their 404 / 405.
        if error.status_code == 400:
            return _error(400, "ValueError", f"invalid request: {error.detail}")
        return Response(json.dumps({"detail": error.detail}), status_code=error.status_code,
                        media_type="application/json", headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        return _error(400, "ValueError", f"invalid request: {validation_problems(error.errors())}")

    for error_class in PROTOCOL_ERRORS:
        @app.exception_handler(error_class)
        async def framework_error(request: Request, error: Exception) -> Response:
            # The table's class, not a subclass's name (e.g. DatasetError is answered as ValueError).
            name = next(c.__name__ for c in PROTOCOL_ERRORS if isinstance(error, c))
            return _error(400, name, str(error))

    def keys(user_key: str | None = Header(None, alias="User-Key"),
             session_key: str | None = Header(None, alias="Session-Key")) -> tuple[str, str]:
        if not user_key or not session_key:
            raise ProtocolError(401, "Unauthorized", "the User-Key and Session-Key headers are required")
        if config.user_keys is not None and user_key not in config.user_keys:
            raise ProtocolError(403, "Forbidden", "unknown user key")
        return user_key, session_key

    def existing(key: tuple[str, str]) -> _Session:
        with sessions_lock:
            state = sessions.get(key)
            if state is not None:
                state.used = time.monotonic()
            was_closed = key in closed
        if state is None and was_closed:
            raise ProtocolError(404, "SessionNotFound", f"this session was closed to make room for newer ones "
                                                        f"({_session_limits()}): start a new one")
        if state is None:
            raise ProtocolError(404, "SessionNotFound", "no such session: ask for the samples first")
        return state

    def session(key: tuple[str, str] = Depends(keys)) -> tuple[tuple[str, str], _Session]:
        return key, existing(key)

    async def interaction_body(request: Request) -> Interaction:
        # Read here, after the keys and the session are checked (FastAPI parses a body parameter first), and
        # each comma counted as a value (more than there are: commas in strings too) before it is parsed.
        data = await request.body()
        if data.count(b",") > MAX_JSON_VALUES:
            raise ProtocolError(413, "ValueError", f"the request body holds more than {MAX_JSON_VALUES} JSON values "
                                                   "(a round's masks are a few per object and frame)")
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise ProtocolError(400, "ValueError", f"invalid request: the body is not JSON ({error})") from None
        try:
            return Interaction.model_validate(parsed)
        except ValidationError as error:
            problems = [{**problem, "loc": ("body", *problem.get("loc", ()))} for problem in error.errors()]
            raise ProtocolError(400, "ValueError", f"invalid request: {validation_problems(problems)}") from None

    @app.get("/api/healthcheck")
    def healthcheck() -> Response:
        return _json({"status": "ok"})

    @app.get("/api/dataset/samples")
    def samples(key: tuple[str, str] = Depends(keys)) -> Response:
        with sessions_lock:
            if key not in sessions:
                for old in _make_room(sessions, key[0]):
                    del sessions[old]
                    closed[old] = None
                    while len(closed) > MAX_SESSIONS:
                        closed.popitem(last=False)
                    log.info("session %s... of user %s closed to make room", _shown(old[1], 8),
                             _shown(old[0], 40))
                closed.pop(key, None)
                sessions[key] = _Session(EvaluationService(
                    config.subset, davis_root=root, max_t=config.max_time, max_i=config.max_interactions,
                    metric_to_optimize=config.metric))
                log.info("session %s... of user %s started", _shown(key[1], 8), _shown(key[0], 40))
            state = sessions[key]
            state.used = time.monotonic()
        pairs, max_t, max_i = state.service.get_samples()
        return _json([[list(pair) for pair in pairs], max_t, max_i])

    @app.get("/api/dataset/scribbles/{sequence}/{scribble_idx}")
    def scribbles(sequence: str, scribble_idx: int, key: tuple[str, str] = Depends(keys)) -> Response:
        state = existing(key)
        with state.lock:
            return _json(state.service.get_scribble(sequence, scribble_idx))

    @app.post("/api/evaluation/interaction")
    def interaction(played: tuple[tuple[str, str], _Session] = Depends(session),
                    body: Interaction = Depends(interaction_body)) -> Response:  # noqa: B008
        key, state = played
        if body.sequence not in state.service.sequences:
            raise ValueError(f"invalid sequence: {body.sequence}")
        if not math.isfinite(body.timing) or body.timing < 0:
            raise ValueError(f"timing must be a finite number of seconds >= 0, got {body.timing}")
        meta = Davis.dataset[body.sequence]
        # The framework's client never submits past a sample's budget (max_time per object); seconds beyond it
        # would bend the time curve back and give a negative AUC (or an infinite one).
        budget = config.max_time * meta["num_objects"]
        sample = (body.sequence, body.scribble_idx)
        width, height = meta["image_size"]
        with scoring:
            masks = decode_masks(body.pred_masks, meta["num_frames"], height, width, meta["num_objects"])
            # Checked here: the framework stores the round's scores before it reads them, and an index outside the
            # video would then fail it and leave the sample unplayable.
            outside = [f for f in body.next_scribble_frame_candidates or [] if not 0 <= f < meta["num_frames"]]
            if outside:
                raise ValueError(f"next_scribble_frame_candidates: frame {outside[0]} is not in 0..{meta['num_frames'] - 1} "
                                 f"({body.sequence} has {meta['num_frames']} frames)")
            with state.lock:
                if state.finished:
                    raise RuntimeError("this session is finished: start a new one")
                spent = state.spent.get(sample, 0.0) + body.timing
                if spent > budget:
                    raise ValueError(f"timing: {body.sequence} sample {body.scribble_idx} would have taken {spent:.6g} s, "
                                     f"past its {budget:g} s ({config.max_time:g} s per object): a client does not "
                                     "submit after the time is up")
                scribble = state.service.post_predicted_masks(
                    body.sequence, body.scribble_idx, masks, body.timing, body.interaction, key[0], key[1],
                    next_scribble_frame_candidates=body.next_scribble_frame_candidates)
                state.spent[sample] = spent
        return _json(scribble)

    @app.get("/api/evaluation/report")
    def report(key: tuple[str, str] = Depends(keys)) -> Response:
        state = existing(key)
        with state.lock:
            df = state.service.get_report(session_id=key[1])
        return _json({column: df[column].tolist() for column in df.columns})

    @app.post("/api/evaluation/finish")
    def finish(key: tuple[str, str] = Depends(keys)) -> Response:
        state = existing(key)
        with state.lock:
            summary = state.service.summarize_report(state.service.get_report(session_id=key[1]))
            state.finished = True
        log.info("session %s... of user %s finished: AUC %.3f", _shown(key[1], 8), _shown(key[0], 40),
                 summary["auc"])
        return _json(summary)

    return app


# --- serving -----------------------------------------------------------------------------------------------
def _uvicorn_server(app: FastAPI):
    import uvicorn

    # Our logging, our one line per request (uvicorn's access log would be a second one); headers timed.
    return uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                         http=HeaderTimeoutProtocol))


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: a free port); OSError when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((BIND_ADDRESS, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@dataclass
class RunningServer:
    url: str
    stop: Callable[[], None]  # shut it down (idempotent); the port is closed when it returns


@contextlib.contextmanager
def serving(app: FastAPI, port: int = 0, start_timeout: float = 30.0) -> Iterator[RunningServer]:
    """Run `app` in a thread of this process (tests, notebooks) until the block ends."""
    sock = bind(port)
    server = _uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="davis-server")
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the evaluation server did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=start_timeout)
        sock.close()

    try:
        yield RunningServer(url_of(sock), stop)
    finally:
        stop()


def main(argv: list[str] | None = None) -> int:
    """python -m agent.server [--davis-root DIR] [--port N]: serve the DAVIS Interactive protocol locally."""
    import argparse

    from ..config import ConfigError
    from ..data.davis import DatasetError

    parser = CommandParser(prog="python -m agent.server", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis-root", type=path_arg, default=None,
                        help="DAVIS-format root with annotations and scribbles (default: built-in synthetic data)")
    parser.add_argument("--subset", default="val", help="served as the challenge's samples (default val)")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the sequences")
    parser.add_argument("--max-interactions", type=int, default=8, help="per sample, imposed on clients (8)")
    parser.add_argument("--max-time", type=float, default=240.0, help="seconds per object per sample (240)")
    parser.add_argument("--metric", default="J", help="J (default), F or J_AND_F")
    parser.add_argument("--port", type=int, default=8000, help="on 127.0.0.1 (default 8000; 0: any free port)")
    parser.add_argument("--user-key", action="append", default=None, dest="user_keys", metavar="KEY",
                        help="accept only this user key (repeatable; default: any)")
    parser.add_argument("--skip-bad-sequences", action="store_true",
                        help="serve the other sequences when one's files are wrong (default: refuse to start)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)  # davisinteractive logs every step at INFO
    try:
        sequences = comma_names(args.sequences, "--sequences")
        sequences = None if sequences is None else tuple(sequences)
        config = ServerConfig(davis_root=args.davis_root, subset=args.subset, sequences=sequences,
                              max_interactions=args.max_interactions, max_time=args.max_time, metric=args.metric,
                              port=args.port, user_keys=tuple(args.user_keys) if args.user_keys else None,
                              skip_bad_sequences=args.skip_bad_sequences)
        if config.davis_root is None:
            from ..data.synthetic import ensure_default_dataset

            root = ensure_default_dataset()
        else:
            root = config.davis_root
        app = create_app(config, root)
        sock = bind(config.port)
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot listen on {BIND_ADDRESS}:{args.port} ({error.strerror}): pass another --port",
              file=sys.stderr)
        return 2
    registration = app.state.registration
    url = url_of(sock)
    log.info("serving DAVIS Interactive %s of %s (%d sequences; %d interactions, %g s per object, metric %s)",
             config.subset, registration.root, len(registration.sequences), config.max_interactions,
             config.max_time, config.metric)
    print(f"serving on {url}: python session_runner.py --host {url} --user-key KEY --davis-root {registration.root}",
          flush=True)
    _uvicorn_server(app).run(sockets=[sock])
    return 0
