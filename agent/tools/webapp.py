"""The browser page's server (python -m agent.app): FastAPI on 127.0.0.1, one video and one agent at a time.

Long work (reading the video, segmenting, exporting) runs in one background thread as a job; the page polls
/api/state for its progress and error. Every error reaches the page as {"error": one line}, never a
traceback (unexpected ones are logged here in full).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..asgi import BodyTimeout, foreign_host
from ..config import ConfigError
from ..data.davis import DatasetError
from ..errors import counted, first_line, validation_problems
from ..paths import unused_path
from .export import export, palette_colours, prepare_output
from .replay import check_drawn_on, replay_warnings
from .scribble_input import ScribbleSource, empty_scribbles, load_source, repeated_round
from .segmenter import VideoSegmenter
from .video import (
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_WORKING_SIDE,
    InputError,
    VideoSource,
    WorkingFrames,
    open_video,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
USER_ERRORS = (InputError, DatasetError, ConfigError, ValueError)
MAX_JSON_BYTES = 8 * 2**20  # the page's largest request, a round's strokes, is a few kB


class TooLarge(Exception):
    """A request body over its limit (answered 413)."""


class UnsupportedType(Exception):
    """A request body that is not JSON where JSON is expected (answered 415)."""


class Busy(Exception):
    pass


class Stopped(Exception):
    """The server is stopping (AppState.close): the running job ends at its next step, cleaning up after itself."""


@dataclass
class Job:
    kind: str  # open | segment | export
    stage: str = ""
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.time)
    finished: bool = False
    error: str | None = None
    message: str | None = None
    warning: str | None = None  # said beside the message: an export replayed with other settings


MAX_UPLOAD_MB = 2**30  # 1 PiB: more than any disk the upload lands on


class AppState:
    """The page's video, its segmentation rounds and the one running job."""

    def __init__(self, agent_factory: Callable[[], object], working_side: int = DEFAULT_WORKING_SIDE,
                 segmenter_factory: Callable | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
        # Bounded: 1e308 MB passed isfinite, and its bytes overflowed to infinity (a traceback at start).
        if not (isinstance(max_upload_mb, (int, float)) and math.isfinite(max_upload_mb)
                and 0 < max_upload_mb <= MAX_UPLOAD_MB):
            raise InputError(f"--max-upload-mb must be a positive number of at most {MAX_UPLOAD_MB} (1 PiB), got "
                             f"{max_upload_mb!r}")
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self._agent_factory = agent_factory
        self._agent = None
        self.working_side = working_side
        self._segmenter_factory = segmenter_factory or (lambda agent, frames: VideoSegmenter(agent, frames))
        self.video: VideoSource | None = None
        self.frames: WorkingFrames | None = None
        self.segmenter: VideoSegmenter | None = None
        self.job: Job | None = None
        self._thread: threading.Thread | None = None  # the job's
        self._stopping = False
        self._lock = threading.RLock()  # segment, export and reset hold it around their check_idle
        self._uploads = tempfile.TemporaryDirectory(prefix="simlearn-app-")
        self.uploads_dir = self._uploads.name
        self.partial_uploads: set[str] = set()  # names of the uploads streaming now (not yet named)

    @property
    def agent(self):
        if self._agent is None:  # built on first use: the page is up at once
            self._agent = self._agent_factory()
        return self._agent

    # --- jobs ------------------------------------------------------------------------------------
    def start_job(self, kind: str, work: Callable[[Job], str | None]) -> Job:
        with self._lock:
            self.check_idle()
            if self._stopping:
                raise Busy("the server is stopping")
            job = self.job = Job(kind)
            self._thread = threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"app-{kind}")
            self._thread.start()
        return job

    def close(self, timeout: float = 60.0) -> None:
        """Stop the running job at its next step and wait for it: the server stopped with Ctrl-C ended the job's
        daemon thread where it was, and an export left its half-written hidden `.export-*` folder and an empty
        `masks` in the output (which refused the next export as "not empty")."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, job: Job, work: Callable[[Job], str | None]) -> None:
        try:
            job.message = work(job)
        except Stopped:  # what it wrote is removed (an export's folder as it was)
            job.error = f"{job.kind} stopped: the server is shutting down"
            log.warning("%s", job.error)
        except USER_ERRORS as error:
            job.error = first_line(error)
        except OSError as error:  # the file system (a full disk, a folder where a file goes): its one line
            log.exception("%s failed", job.kind)
            where = f"{error.filename}: " if getattr(error, "filename", None) else ""
            job.error = f"{job.kind} failed: {where}{error.strerror or type(error).__name__}"
        except Exception as error:  # a bug: the page still gets a line, the log the traceback (ffmpeg's banner)
            log.exception("%s failed", job.kind)
            job.error = f"unexpected error while {job.kind}ing: {first_line(error)} (details in the server's log)"
        finally:
            job.finished = True

    def progress(self, job: Job) -> Callable[[str, int, int], None]:
        def update(stage: str, done: int, total: int) -> None:
            if self._stopping:
                raise Stopped()
            job.stage, job.done, job.total = stage, done, total
        return update

    # --- work ------------------------------------------------------------------------------------
    def open(self, path: str | Path | VideoSource, sources: list[ScribbleSource] | None = None,
             warnings: list[str] | None = None) -> Job:
        """Open a video; the rounds of `sources` (load_sources, read for this video: an earlier export's strokes) are
        then played on it, so the page continues that result and its next export records them first. `warnings`:
        replay_warnings of `sources` as the caller computed them (app_cli printed them), shown as they are."""
        def work(job: Job) -> str:
            try:
                job.stage = "probe"
                video = path if isinstance(path, VideoSource) else open_video(path)
                frames = WorkingFrames.read(video, self.working_side, self.progress(job))
                job.stage, job.done, job.total = "load model", 0, 0
                segmenter = self._segmenter_factory(self.agent, frames)
                self.video, self.frames, self.segmenter = video, frames, segmenter
            finally:
                self._drop_unused_uploads()
            opened = f"opened {video.name}: {counted(video.num_frames, 'frame')} of {video.width}x{video.height}"
            if sources:
                return f"{opened}; {self._play(segmenter, sources, job, warnings)}"
            return opened
        return self.start_job("open", work)

    def _play(self, segmenter: VideoSegmenter, sources: list[ScribbleSource], job: Job,
              warnings: list[str] | None = None) -> str:
        """Play scribble sources' rounds (as the page's Segment pressed once for each); one line for any failure,
        naming the sources (the video stays open, without them): an export drawn on another video included.
        `warnings`: their replay_warnings if the caller has them (None: computed here)."""
        names = ", ".join(str(source.path) for source in sources)
        rounds = [round_ for source in sources for round_ in source.rounds]
        try:
            check_drawn_on(sources, self.frames, self.video)
            segmenter.segment_rounds(rounds, self.progress(job))
        except (*USER_ERRORS, MemoryError) as error:  # MemoryError: TooManyObjects, a chunk too large
            raise InputError(f"the strokes of {names} were not played: {first_line(error)}") from error
        # agent.segment's warning: an export made with other settings gives other masks than it did
        if warnings is None:
            warnings = replay_warnings(sources, segmenter.settings)
        job.warning = "; ".join(warnings) or None
        return f"played {counted(len(rounds), 'round')} of strokes from {names} (round {segmenter.rounds} now)"

    def load_strokes(self, path: str) -> Job:
        """The rounds of a scribble source (an earlier export's scribbles.json, a scribble image or folder) for
        the open video, played after the rounds so far: checked before a job starts (InputError, one line)."""
        with self._lock:  # as segment: the segmenter a reset would replace
            segmenter = self.require_segmenter()
            self.check_idle()
            source = load_source(path, self.video, first=not segmenter.has_result)
            check_drawn_on([source], self.frames, self.video)
            repeat = repeated_round(source.rounds, segmenter.history)
            if repeat is not None:  # the export the page was started with, loaded again: every stroke twice
                raise InputError(f"{path}: its round {repeat[0]} is round {repeat[1]} on the page already, stroke "
                                 "for stroke: loaded again, its strokes would be played twice")

            def work(job: Job) -> str:
                job.stage = "segment"
                return self._play(segmenter, [source], job)
            return self.start_job("segment", work)

    def _drop_unused_uploads(self) -> None:
        """Delete uploads that are not the open video (an export reads that one again): repeated uploads would
        otherwise fill the temporary folder until the app stops."""
        keep = Path(self.video.path).resolve() if self.video is not None else None
        for upload in Path(self.uploads_dir).iterdir():
            # The streaming ones by name: an upload may be named .upload-* too (it was kept until the app stopped).
            if upload.is_file() and upload.name not in self.partial_uploads and upload.resolve() != keep:
                upload.unlink(missing_ok=True)

    def segment(self, strokes: list[dict]) -> Job:
        with self._lock:  # as reset: one in between replaced the segmenter read here, and the round ran on the old one
            segmenter = self.require_segmenter()
            scribbles = strokes_to_scribbles(strokes, segmenter.num_frames)
            if not any(scribbles["scribbles"]):
                raise InputError("no new stroke yet: choose an object and draw on it in the frame")
            segmenter.check(scribbles)  # here too, so that a bad round is refused before a job starts

            def work(job: Job) -> str:
                segmenter.segment(scribbles, self.progress(job))
                return f"segmented {counted(segmenter.num_frames, 'frame')} (round {segmenter.rounds})"
            return self.start_job("segment", work)

    def export(self, output: str, overwrite: bool) -> Job:
        # Under the job lock: the folder is made only for an export that starts (one refused as busy left an empty
        # masks/ there, which refused the next try as "not empty"), and the segmenter read is the one a reset
        # would replace (one in between left the discarded masks exported).
        with self._lock:
            segmenter = self.require_segmenter()
            if not segmenter.has_result:
                raise InputError("nothing segmented yet: draw a stroke and press Segment first")
            if not output.strip():
                raise InputError("give an output folder to export to")
            self.check_idle()
            folder = prepare_output(output.strip(), overwrite, video=self.video.path,
                                    how_to_overwrite='tick "overwrite"')
            video = self.video

            def work(job: Job) -> str:
                export(video, segmenter.labels, folder, segmenter.num_objects(), segmenter.record,
                       self.progress(job), overwrite)
                return f"exported {counted(video.num_frames, 'mask')}, overlay.mp4 and masks.json to {folder.resolve()}"
            return self.start_job("export", work)

    def reset(self) -> None:
        with self._lock:  # as export: a job started between the check and the new segmenter ran on the old one
            self.check_idle()
            self.require_segmenter()
            self.segmenter = self._segmenter_factory(self.agent, self.frames)

    def check_idle(self) -> None:
        if self.job is not None and not self.job.finished:
            raise Busy(f"busy {self.job.kind}ing: wait until it has finished")

    def require_segmenter(self) -> VideoSegmenter:
        if self.segmenter is None:
            raise InputError("no video yet: open one first")
        return self.segmenter

    def snapshot(self) -> dict:
        video = None
        if self.video is not None and self.frames is not None:
            v = self.video
            video = {"name": json_text(v.name), "path": json_text(str(v.path)), "num_frames": v.num_frames,
                     "width": v.width, "height": v.height, "fps": v.fps, "working": list(self.frames.size)}
        segmenter = self.segmenter
        job = asdict(self.job) if self.job else None
        if job:
            job["error"], job["message"], job["warning"] = map(json_text, (job["error"], job["message"], job["warning"]))
        return {
            "video": video,
            "job": job,
            "rounds": segmenter.rounds if segmenter else 0,
            "has_result": bool(segmenter and segmenter.has_result),
            "num_objects": segmenter.num_objects() if segmenter else 0,
            "persistent": bool(segmenter and segmenter.persistent),
        }


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(text: str | None) -> str | None:
    """`text` as JSON can carry it: a file name that is not UTF-8 reaches Python with lone surrogates, which no
    UTF-8 response can hold (every state request failed with a 500 once such a video was open); its bytes are
    shown as \\xe9 escapes instead (another lone surrogate, sent as "\\ud800" in a request, as \\ud800)."""
    if text is None:
        return None
    return _SURROGATE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}" if 0xDC80 <= ord(m[0]) <= 0xDCFF
                          else f"\\u{ord(m[0]):04x}", text)


def error_response(message: str, status_code: int, headers: dict | None = None) -> JSONResponse:
    """Every error the page gets: {"error": message}, the message as JSON can carry it (json_text)."""
    return JSONResponse({"error": json_text(message)}, status_code=status_code, headers=headers)


def strokes_to_scribbles(strokes: list[dict], num_frames: int) -> dict:
    """The page's strokes ({frame, object_id, path: [[x, y], ...] in [0, 1]}) -> a DAVIS scribble dict."""
    scribbles = empty_scribbles(num_frames)
    if not isinstance(strokes, list):
        raise InputError("strokes must be a list")
    for stroke in strokes:
        try:
            frame, object_id = stroke["frame"], stroke["object_id"]
            # numbers only: float() would read "0.5" and true as coordinates
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for p in stroke["path"] for v in p):
                raise TypeError("a point's coordinates must be numbers")
            path = [[float(x), float(y)] for x, y in stroke["path"]]
        except (KeyError, TypeError, ValueError, OverflowError) as error:  # OverflowError: beyond a float
            raise InputError(f"malformed stroke ({error})") from error
        for name, value in (("frame", frame), ("object_id", object_id)):
            if not isinstance(value, int) or isinstance(value, bool):  # 1.7, "3", true or Infinity
                raise InputError(f"a stroke's {name} must be an integer, got {value!r}")
        if not all(math.isfinite(v) for point in path for v in point):
            raise InputError("a stroke has a point that is NaN or infinite")
        if not 0 <= frame < num_frames:
            raise InputError(f"a stroke on frame {frame} but the video has {counted(num_frames, 'frame')}")
        if object_id < 0 or not path:
            raise InputError("a stroke needs an object id >= 0 and at least one point")
        path = [[min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)] for x, y in path]  # drawn past the edge
        scribbles["scribbles"][frame].append({"path": path, "object_id": object_id,
                                              "start_time": 0.0, "end_time": 0.0})
    return scribbles


def mask_png(labels: np.ndarray, colours: np.ndarray) -> bytes:
    """Objects in their palette colours, background transparent (RGBA PNG)."""
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., :3] = colours[labels][..., ::-1]  # OpenCV writes BGRA
    rgba[..., 3] = np.where(labels > 0, 255, 0)
    ok, data = cv2.imencode(".png", rgba)
    if not ok:
        raise RuntimeError("cannot encode a mask")
    return data.tobytes()


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(title="simlearn-ivos", docs_url=None, redoc_url=None)
    app.state.segment = state
    colours = palette_colours()
    # A body that stops arriving (an upload declared and never sent) held its connection for ever.
    app.add_middleware(BodyTimeout, respond=lambda message: error_response(message, 408))

    @app.middleware("http")
    async def this_page_only(request: Request, call_next):
        # Any web page the user visits could otherwise drive the app (open files, export anywhere): a browser
        # sends a cross-site POST with its Origin, and a DNS-rebinding page with its own host name as Host.
        refused = foreign_request(request.headers.get("host", ""), request.headers.get("origin"), request.method)
        response = error_response(refused, 403) if refused is not None else await call_next(request)
        # Nor frame it: a foreign page showing the page in a frame under its own could have the user click through it
        # (clickjacking: "Start over" forgets every stroke and mask at one click, and the frame's requests are its own).
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return response

    @app.exception_handler(InputError)
    @app.exception_handler(DatasetError)
    async def user_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(str(error), 400)

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Exception) -> JSONResponse:
        return error_response(str(error), 409)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, error: Exception) -> JSONResponse:
        return error_response(str(error), 413)

    @app.exception_handler(UnsupportedType)
    async def unsupported_type(request: Request, error: Exception) -> JSONResponse:
        return error_response(str(error), 415)

    # FastAPI's own answers (unknown route, wrong method, a path parameter of the wrong type) in the same shape.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(f"{request.method} {request.url.path}: {error.detail}", error.status_code,
                              headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(f"invalid request: {validation_problems(error.errors())}", 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(f"unexpected error: {error} (details in the server's log)", 500)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/state")
    def get_state() -> dict:
        return state.snapshot()

    @app.post("/api/open")
    async def post_open(request: Request) -> dict:
        body = await _json(request)
        path = body.get("path", "")
        if not isinstance(path, str):
            raise InputError(f"path must be text, got {path!r}")
        path = path.strip()
        if not path:
            raise InputError("type the path of a video file or a folder of frames, or upload a video")
        state.open(path)
        return state.snapshot()

    @app.post("/api/load-strokes")
    async def post_load_strokes(request: Request) -> dict:
        state.check_idle()
        path = (await _json(request)).get("path", "")
        if not isinstance(path, str):
            raise InputError(f"path must be text, got {path!r}")
        if not path.strip():
            raise InputError("type the path of a scribbles.json (an export's), a scribble image or a folder of them")
        state.load_strokes(path.strip())
        return state.snapshot()

    @app.post("/api/upload")
    async def post_upload(request: Request, name: str = "video.mp4") -> dict:
        state.check_idle()
        # The page sends the file's bytes as the body. A form's (curl -F, an HTML form) were stored with the form's
        # wrapping around them, and a good video was "not a video FFmpeg can read (Could not load meta information)".
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise UnsupportedType(f"the upload must be the file's bytes as the request body, not a form ({content_type}):"
                                  " the page sends it so; with curl, --data-binary @clip.mp4 rather than -F")
        base = Path(name).name
        if base in ("", ".", "..") or "\x00" in base or len(base.encode()) > 200:
            raise InputError(f"the upload's name {name[:60]!r} is not a usable file name")
        limit = state.max_upload_bytes
        chunks = _body_chunks(request, limit, f"the upload is larger than the app's limit of {limit / 2**20:g} MB "
                                              "(python -m agent.app --max-upload-mb)")
        # Streamed to a hidden file, then named: a refused or broken upload leaves nothing behind.
        handle, partial = tempfile.mkstemp(prefix=".upload-", dir=state.uploads_dir)
        state.partial_uploads.add(Path(partial).name)
        try:
            size = 0
            with os.fdopen(handle, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    out.write(chunk)
            if size == 0:
                raise InputError("the uploaded file is empty")
            # Never over an earlier upload: it may be the open video, whose results are still shown.
            target = unused_path(Path(state.uploads_dir) / base)
            os.replace(partial, target)
        finally:
            state.partial_uploads.discard(Path(partial).name)
            Path(partial).unlink(missing_ok=True)
        try:
            state.open(target)
        except Busy:  # a job started while it streamed: refused, and not kept until the next open
            target.unlink(missing_ok=True)
            raise
        return state.snapshot()

    @app.get("/api/frame/{index}")
    def get_frame(index: int) -> Response:
        frames = _frames(state, index)
        return Response(frames.encoded[index], media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.get("/api/mask/{index}")
    def get_mask(index: int) -> Response:
        _frames(state, index)
        segmenter = state.require_segmenter()
        return Response(mask_png(segmenter.labels(index), colours), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/strokes")
    def get_strokes() -> dict:
        segmenter = state.require_segmenter()
        return {"strokes": [{"frame": f, "object_id": s["object_id"], "path": s["path"]}
                            for f, strokes in enumerate(segmenter.scribbles["scribbles"]) for s in strokes]}

    @app.post("/api/segment")
    async def post_segment(request: Request) -> dict:
        state.check_idle()
        state.segment((await _json(request)).get("strokes", []))
        return state.snapshot()

    @app.post("/api/suggest")
    def post_suggest() -> dict:
        state.check_idle()
        return {"frame": state.require_segmenter().suggest_frame()}

    @app.post("/api/export")
    async def post_export(request: Request) -> dict:
        state.check_idle()
        body = await _json(request)
        output, overwrite = body.get("output", ""), body.get("overwrite", False)
        if not isinstance(output, str):
            raise InputError(f"output must be the path of a folder (text), got {output!r}")
        if not isinstance(overwrite, bool):  # "false" would be true
            raise InputError(f"overwrite must be true or false, got {overwrite!r}")
        state.export(output, overwrite)
        return state.snapshot()

    @app.post("/api/reset")
    def post_reset() -> dict:
        state.reset()
        return state.snapshot()

    return app


async def _body_chunks(request: Request, limit: int, message: str) -> AsyncIterator[bytes]:
    """The request body's chunks; TooLarge(message) from its Content-Length before any is read, or, without
    one (chunked), as soon as the bytes streamed pass `limit`."""
    try:
        declared = int(request.headers.get("content-length", 0))
    except ValueError:
        declared = 0  # an odd header: the streamed byte count decides
    if declared > limit:
        raise TooLarge(message)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(message)
        yield chunk


def foreign_request(host: str, origin: str | None, method: str) -> str | None:
    """Why a request did not come from this app's own page, or None. Host must name this machine (an IP
    address, localhost or its host name); a request that changes something must come from a page of that same
    host when the browser says where it came from (Origin)."""
    refused = foreign_host(host)
    if refused is not None:
        return refused
    if method not in ("GET", "HEAD", "OPTIONS") and origin is not None and _netloc(origin) != host:
        return f"a request from the page {origin} is refused: only this app's own page may change it"
    return None


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return None


async def _json(request: Request) -> dict:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":  # a form or text/plain body is what a foreign page can send freely
        raise UnsupportedType(f"the request must be JSON (Content-Type: application/json), not {content_type!r}")
    data = bytearray()
    async for chunk in _body_chunks(request, MAX_JSON_BYTES, f"the request is larger than {MAX_JSON_BYTES // 2**20} MB"):
        data += chunk
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply to parse
        raise InputError("the request was not JSON") from error
    if not isinstance(body, dict):
        raise InputError("the request must be a JSON object")
    return body


def _frames(state: AppState, index: int) -> WorkingFrames:
    if state.frames is None:
        raise InputError("no video yet: open one first")
    if not 0 <= index < len(state.frames):
        raise InputError(f"frame {index} does not exist (0..{len(state.frames) - 1})")
    return state.frames
