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
from ..errors import counted, first_line
from ..inference.plan import RoundPlan
from .replay import segmenting_settings, video_content
from .scribble_input import draws, object_ids, scribbled_frames, scribbles_record, union_of_rounds
from .video import InputError, Progress, WorkingFrames

log = logging.getLogger(__name__)

# The CPU strategy's later rounds: no fine-tuning, dense CRF at half resolution (strategies/cpu.py).
DEFAULT_PLAN = RoundPlan(finetune_seconds=0.0, use_crf=True, crf_scale=0.5)
# ~15 MB a frame inside the agent at 480p (features, frames, int64 labels, top-k pool: footprint.py): 50
# frames keep a chunk near 0.8 GB; larger chunks save little time (each chunk repeats only the scribbled frames' work).
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
    # allow_nan=False: a NaN start_time was written into scribbles.json, which strict JSON readers refuse.
    return json.loads(json.dumps(plain, default=_json_value, allow_nan=False))


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
                                 f"({first_line(error)}): give finite numbers, strings, lists and dicts") from error
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
        log.info("round %d: %s in %.1f s", self.rounds, counted(self.num_frames, "frame"), time.perf_counter() - started)

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
            # Its frame numbers: the identity of several objects counts the frames between a scribbled frame and
            # the chunk's (they were adjacent rows, a chunk's own frames swept from a stroke 40 frames away).
            self.agent.start(self.frames.stack(index), num_objects, frame_numbers=index)
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
