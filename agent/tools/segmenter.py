"""Rounds of scribbles -> labels for every frame of a video at its working size.

The agent keeps every frame, its backbone features (~7 MB a frame at 480p) and int64 labels in memory, so a
long video goes through it in chunks: each chunk is started with the chunk's frames plus every scribbled
frame, and stepped with all scribbles so far. Without fine-tuning (the default plan, as the CPU strategy
measured best) the model never changes, so a frame's labels do not depend on the chunk it is in. A video of
at most `chunk_frames` frames keeps one agent across rounds instead, fed only each round's new strokes, as in
the benchmark (its reference pool then compares the frames with the new pixels only). Each round's strokes are
recorded (`record`, the export's scribbles.json), so `segment_rounds` replays a result exactly.

Labels are kept PNG-encoded (a few kB a frame), so memory does not grow with the video's length.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import numbers
import time

import cv2
import numpy as np

from ..data.davis import DatasetError, validate_scribbles
from ..errors import first_line
from ..inference.plan import RoundPlan
from .scribble_input import draws, object_ids, scribbled_frames, scribbles_record, union_of_rounds
from .video import InputError, Progress, WorkingFrames

log = logging.getLogger(__name__)

# The CPU strategy's later rounds: no fine-tuning, dense CRF at half resolution (strategies/cpu.py).
DEFAULT_PLAN = RoundPlan(finetune_seconds=0.0, use_crf=True, crf_scale=0.5)
# ~12 MB a frame inside the agent at 480p (features, frames, int64 labels, top-k pool): 50 frames keep a chunk
# near 0.6 GB; larger chunks save little time (each chunk repeats only the scribbled frames' work).
DEFAULT_CHUNK_FRAMES = 50


def release_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps them mapped: after the backbone's ONNX export (~1 GB
    at 480p) and between chunks (fragmentation), the process would otherwise hold a GB it does not use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _json_value(value):
    """json.dumps's fallback: numpy values as plain numbers and lists; anything else is no JSON value (TypeError)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} is no JSON value")


def plain_stroke(stroke: dict) -> dict:
    """A copy of a (validated) stroke in plain JSON values: the strokes segmented are written as scribbles.json
    (numpy coordinates or ids, or a datetime under another key, failed that write once every mask was computed),
    and the record must not change when the caller reuses its dicts. TypeError or ValueError for a stroke that has
    no JSON form."""
    plain = dict(stroke, path=[[float(x), float(y)] for x, y in stroke["path"]], object_id=int(stroke["object_id"]))
    return json.loads(json.dumps(plain, default=_json_value))


def segmenting_settings(num_frames: int, size: tuple[int, int], chunk_frames: int, plan: RoundPlan) -> dict:
    """What the masks depend on besides the strokes and the agent's config, recorded in scribbles.json ("segmented"):
    a replay on another video (another frame count or shape) is refused, one with other settings warned about."""
    return {"num_frames": num_frames, "working_size": list(size), "in_chunks": num_frames > chunk_frames,
            "crf_scale": (plan.crf_scale or "config") if plan.use_crf else 0}


def replay_warnings(sources: list, now: dict) -> list[str]:
    """A line for each export among `sources` (ScribbleSource) whose recorded settings ("segmented") differ from
    `now` (segmenting_settings): its rounds are replayed, but to other masks than that export's (it said nothing,
    and the masks differed)."""
    lines = []
    for source in sources:
        path, then = source.path, source.settings or {}
        what = []
        if then.get("working_size", now["working_size"]) != now["working_size"]:
            what.append("--working-size (frames of {1}x{0} then, {3}x{2} now)".format(*then["working_size"],
                                                                                   *now["working_size"]))
        if then.get("in_chunks", now["in_chunks"]) != now["in_chunks"]:
            how = {True: "in chunks", False: "in one agent"}
            what.append(f"--chunk-frames ({how[then['in_chunks']]} then, {how[now['in_chunks']]} now)")
        if then.get("crf_scale", now["crf_scale"]) != now["crf_scale"]:
            what.append(f"--crf-scale ({then['crf_scale']} then, {now['crf_scale']} now)")
        if what:
            lines.append(f"{path} was segmented with another {', '.join(what)}: its rounds are replayed, but its "
                         "masks will not come back exactly; give the export's settings for them")
    return lines


# The video's content in "segmented" ("content"): the mean colour of each cell of a CONTENT_GRID x CONTENT_GRID grid
# on the first, middle and last working frame. An export fed to another video of the same frame count and shape
# played its strokes on other content without a word; re-encoding or JPEG-compressing the video moves a cell's
# mean by a level or two, another video by tens (docs/OWN_VIDEOS.md).
CONTENT_GRID = 4
# Same video (measured on the synthetic video and 3 DAVIS sequences: PNG or JPEG frames vs JPEG quality 50..10,
# H.264 or MPEG-4 re-encodes, working sizes 120..480): up to 2.6, 4.7 at H.264's lowest quality. Another video
# of the same size (33 DAVIS sequences, pairwise): 20 or more, median 52.
CONTENT_TOLERANCE = 8.0


def content_frames(num_frames: int) -> list[int]:
    """The frames whose content "segmented" records: first, middle and last (fewer when they coincide)."""
    return sorted({0, num_frames // 2, num_frames - 1})


def video_content(frames: WorkingFrames, at: list[int] | None = None) -> dict:
    """The content record of `frames` (CONTENT_GRID): {"frames": [indices], "means": one list per frame of the
    cells' mean R, G, B, row by row, as integers}."""
    at = content_frames(len(frames)) if at is None else at
    grid = (CONTENT_GRID, CONTENT_GRID)
    means = [cv2.resize(frames.frame(index).astype(np.float32), grid, interpolation=cv2.INTER_AREA) for index in at]
    return {"frames": list(at), "means": [[int(v) for v in np.rint(m).reshape(-1)] for m in means]}


def content_difference(recorded: dict, frames: WorkingFrames) -> float:
    """The largest, over the frames `recorded` (video_content, validated) names, of the mean absolute difference
    between its cell colours and those of `frames`."""
    now = video_content(frames, recorded["frames"])["means"]
    return max(float(np.mean(np.abs(np.subtract(a, b)))) for a, b in zip(recorded["means"], now, strict=True))


def check_drawn_on(sources: list, frames: WorkingFrames, video) -> None:
    """InputError for the first source (ScribbleSource) whose "segmented" records content other than `frames'`
    (another video of the same frame count and shape: its strokes were played on other content), or records it
    in another form than video_content's. A source without "content" (DAVIS's files, older exports) passes."""
    for source in sources:
        recorded = (source.settings or {}).get("content")
        if recorded is None:
            continue
        if not _is_content(recorded, len(frames)):
            raise InputError(f"{source.path}: 'segmented' 'content' must be what an export writes ({{\"frames\": "
                             f"[0, 4, 8], \"means\": [[{3 * CONTENT_GRID ** 2} integers] per frame]}}), got "
                             f"{str(recorded)[:80]}: remove 'segmented' to play its strokes on any video")
        if content_difference(recorded, frames) > CONTENT_TOLERANCE:
            raise InputError(f"{source.path}: was drawn on another video (its frames differ from those of "
                             f"{video.path}): remove 'segmented' from it to play its strokes anyway")


def _is_content(recorded: object, num_frames: int) -> bool:
    """Whether `recorded` has video_content's form for a video of `num_frames` frames."""
    def integer(value, low, high):
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    if not isinstance(recorded, dict) or set(recorded) != {"frames", "means"}:
        return False
    at, means = recorded["frames"], recorded["means"]
    return (isinstance(at, list) and isinstance(means, list) and 0 < len(at) == len(means)
            and all(integer(index, 0, num_frames - 1) for index in at)
            and all(isinstance(cells, list) and len(cells) == 3 * CONTENT_GRID ** 2
                    and all(integer(v, 0, 255) for v in cells) for cells in means))


class VideoSegmenter:
    def __init__(self, agent, frames: WorkingFrames, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                 plan: RoundPlan | None = None) -> None:
        if not isinstance(frames, WorkingFrames):  # an array's .size (an int) failed as "'int' object is not iterable"
            raise TypeError(f"frames must be WorkingFrames (agent.tools.video: WorkingFrames.read(open_video(path))), "
                            f"got {type(frames).__name__}")
        if not isinstance(chunk_frames, numbers.Integral) or isinstance(chunk_frames, bool) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")
        if plan is not None and not isinstance(plan, RoundPlan):
            raise TypeError(f"plan must be a RoundPlan, got {type(plan).__name__}")
        self.agent = agent
        self.frames = frames
        self.num_frames = len(frames)
        self.chunk_frames = chunk_frames
        self.plan = DEFAULT_PLAN if plan is None else plan
        self.history: list[dict] = []  # each round's own strokes, in order
        self._labels: list[bytes | None] = [None] * self.num_frames
        self._confidence = np.full(self.num_frames, np.nan, np.float32)
        self._agent_started = False
        self._agent_sample = None  # which of the agent's samples (InteractiveAgent.samples) holds this video
        prepare = getattr(agent, "prepare", None)
        if prepare is not None:  # the backbone runtime for this size, built now rather than in round 1
            prepare([frames.size])
            release_memory()

    @property
    def persistent(self) -> bool:
        """Whether one agent keeps its state across rounds (the video fits in one chunk)."""
        return self.num_frames <= self.chunk_frames

    @property
    def _agent_holds_video(self) -> bool:
        """Whether the agent still holds the sample this segmenter started: another segmenter, or the caller, may
        have started another video on the same agent since, whose state would take this video's strokes."""
        return self._agent_started and getattr(self.agent, "samples", None) == self._agent_sample

    @property
    def scribbles(self) -> dict:
        """Every stroke segmented so far, one DAVIS scribble dict (each frame's strokes in the order segmented)."""
        return union_of_rounds(self.history, self.num_frames)

    @property
    def rounds(self) -> int:
        return len(self.history)

    @property
    def has_result(self) -> bool:
        return self.rounds > 0

    @property
    def record(self) -> dict:
        """The strokes segmented, as the export's scribbles.json holds them: all of them ("scribbles") and each
        round's ("rounds"); `segment_rounds(load_rounds(...))` replays them."""
        return {**scribbles_record(self.history, self.num_frames), "segmented": self.settings}

    @property
    def settings(self) -> dict:
        """segmenting_settings of this segmenter and the video's content, recorded in scribbles.json."""
        return {**segmenting_settings(self.num_frames, self.frames.size, self.chunk_frames, self.plan),
                "content": self._content}

    @functools.cached_property
    def _content(self) -> dict:
        return video_content(self.frames)

    def check(self, scribbles: dict, source: str = "scribbles") -> None:
        """InputError (one line) for malformed scribbles, ones for frames the video does not have, or a round
        after which there is still no object stroke."""
        self._fresh_rounds([scribbles], source)

    def _fresh_rounds(self, rounds: list[dict], source: str = "scribbles") -> list[dict]:
        """Plain copies of these rounds' strokes, each round checked as `check` says, after the ones before it."""
        objects = object_ids(self.scribbles)
        fresh = []
        for number, scribbles in enumerate(rounds, 1):
            where = source if len(rounds) == 1 else f"{source}: round {number}"
            try:
                validate_scribbles(scribbles, source=where, num_frames=self.num_frames)
            except DatasetError as error:
                raise InputError(str(error)) from error
            if not draws(scribbles):  # nothing, or empty paths only: a round that played nothing new, unsaid
                raise InputError(f"{where}: no stroke that draws (a path of points): every round segments some")
            objects |= object_ids(scribbles)
            if not objects:
                raise InputError("no object stroke yet: draw on an object first (background strokes alone say "
                                 "nothing)")
            try:
                fresh.append({"scribbles": [[plain_stroke(stroke) for stroke in strokes]
                                            for strokes in scribbles["scribbles"]]})
            except (TypeError, ValueError) as error:  # ValueError: a value that holds itself
                raise InputError(f"{where}: a stroke holds a value scribbles.json cannot hold "
                                 f"({first_line(error)}): give numbers, strings, lists and dicts") from error
        return fresh

    def segment(self, scribbles: dict, progress: Progress | None = None) -> None:
        """One round: add these strokes to the ones so far and label every frame."""
        self.segment_rounds([scribbles], progress)

    def segment_rounds(self, rounds: list[dict], progress: Progress | None = None) -> None:
        """Rounds in order, as `segment` after `segment` (an export's `record` replayed: the same masks), every
        round checked first; all of them or none count. A video in chunks is segmented once, with every stroke:
        each of its rounds starts the chunks over with all strokes so far, so the last gives what they all give."""
        if isinstance(rounds, dict):  # one round's dict: its keys were taken for rounds
            raise InputError("segment_rounds takes a list of rounds, each a DAVIS scribble dict, got one dict: "
                             "segment(scribbles) plays one round")
        rounds = list(rounds)
        if not rounds:  # it did nothing without a word: no round, the masks as they were
            raise InputError("segment_rounds got no round: give at least one, a DAVIS scribble dict")
        fresh = self._fresh_rounds(rounds)
        merged = self.scribbles
        started = time.perf_counter()
        # The round's labels are kept aside until every frame has them: a chunk that failed (a MemoryError,
        # Ctrl-C) left the chunks before it with this round's labels and the rest with the last round's.
        staged: dict[int, tuple[bytes, float]] = {}
        try:
            for number, new in enumerate(fresh):
                merged = {"scribbles": [old + strokes for old, strokes in
                                        zip(merged["scribbles"], new["scribbles"], strict=True)]}
                if self.persistent:
                    self._segment_persistent(new, merged, staged, progress)
                elif number == len(fresh) - 1:
                    self._segment_chunks(merged, staged, progress)
        except BaseException:  # Ctrl-C too (a notebook's interrupted round): the agent refused every later round
            self._agent_started = False  # its memory may hold half a round: start over next time
            raise
        for frame, (data, confidence) in staged.items():
            self._labels[frame] = data
            self._confidence[frame] = confidence
        self.history.extend(fresh)
        log.info("round %d: %d frames in %.1f s", self.rounds, self.num_frames, time.perf_counter() - started)

    def _segment_persistent(self, new: dict, merged: dict, staged: dict, progress: Progress | None) -> None:
        if progress:
            progress("segment", 0, self.num_frames)
        if not self._agent_holds_video:
            self.agent.start(self.frames.stack(range(self.num_frames)))
            self._agent_started = True
            self._agent_sample = getattr(self.agent, "samples", None)
            new = merged  # a fresh agent needs every stroke so far
        labels = self.agent.step(new, self.plan)
        confidence = self.agent.frame_confidence()
        for frame in range(self.num_frames):
            staged[frame] = self._encode(frame, labels[frame]), float(confidence[frame])
        if progress:
            progress("segment", self.num_frames, self.num_frames)

    def _segment_chunks(self, merged: dict, staged: dict, progress: Progress | None) -> None:
        self._agent_started = False
        scribbled = set(scribbled_frames(merged))
        num_objects = max(object_ids(merged))  # every chunk's agent gets the same classes
        for lo in range(0, self.num_frames, self.chunk_frames):
            if progress:
                progress("segment", lo, self.num_frames)
            chunk = range(lo, min(self.num_frames, lo + self.chunk_frames))
            index = sorted(scribbled | set(chunk))
            self.agent.start(self.frames.stack(index), num_objects)
            labels = self.agent.step({"scribbles": [merged["scribbles"][f] for f in index]}, self.plan)
            confidence = self.agent.frame_confidence()
            for row, frame in enumerate(index):
                if frame in chunk:
                    staged[frame] = self._encode(frame, labels[row]), float(confidence[row])
            del labels
            release_memory()
        if progress:
            progress("segment", self.num_frames, self.num_frames)

    @staticmethod
    def _encode(frame: int, labels: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".png", labels.astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError(f"cannot encode the labels of frame {frame}")
        return data.tobytes()

    def labels(self, frame: int) -> np.ndarray:
        """(h, w) uint8 labels of a frame at the working size (0 background, k object k)."""
        # -1 is no frame here, nor True (a bool is an integer: it was frame 1)
        if not isinstance(frame, numbers.Integral) or isinstance(frame, bool) or not 0 <= frame < self.num_frames:
            raise InputError(f"frame {frame!r} is not in 0..{self.num_frames - 1}")
        data = self._labels[frame]
        if data is None:
            raise InputError("nothing segmented yet: draw a stroke and press Segment")
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def num_objects(self) -> int:
        return max(object_ids(self.scribbles) | {0})

    def suggest_frame(self) -> int:
        """The frame the agent is least sure of, preferring frames without strokes yet."""
        if not self.has_result:
            raise InputError("nothing segmented yet: segment first, then ask for a frame to correct")
        if self.persistent and self._agent_holds_video:
            ranked = self.agent.next_scribble_frame_candidates(self.num_frames)
        else:
            ranked = [int(i) for i in np.argsort(self._confidence, kind="stable")]
        scribbled = set(scribbled_frames(self.scribbles))
        fresh = [f for f in ranked if f not in scribbled]
        return (fresh or ranked)[0]
