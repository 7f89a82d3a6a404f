"""The interface the session drives: one predictor per sample, fed the new scribbles each round."""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod

import numpy as np

from ..data.davis import MAX_OBJECT_ID
from .plan import RoundPlan


def sample_frames(frames, copy: bool = True) -> np.ndarray:
    """`frames` as the (T, H, W, 3) uint8 array `start` takes (copy: the predictor's own, so that a caller may reuse
    its buffer), or a one-line ValueError."""
    try:
        frames = np.array(frames, copy=True if copy else None)
    except ValueError as error:  # numpy's "inhomogeneous shape" said nothing about the frames
        raise ValueError("frames must be a (T, H, W, 3) uint8 array: a sequence of frames of different sizes "
                         "cannot be one") from error
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array with T, H, W >= 1, got {frames.shape} "
                         f"{frames.dtype}")
    return frames


def check_num_objects(num_objects) -> None:
    """A one-line ValueError unless `num_objects` is None (learn it from the scribbles) or an integer in
    1..MAX_OBJECT_ID (above it no DAVIS label; each object costs a score map per frame)."""
    if num_objects is not None and not (
            isinstance(num_objects, numbers.Integral) and not isinstance(num_objects, bool)
            and 1 <= num_objects <= MAX_OBJECT_ID):
        raise ValueError(f"num_objects must be None or an integer in 1..{MAX_OBJECT_ID}, got {num_objects!r}")


def check_sequence(sequence: str | None, scribbles) -> None:
    """A one-line ValueError when `scribbles` (a DAVIS dict) name another sequence than `sequence`, the video the
    sample was started on: those of another video with as many frames were played on this one without a word.
    Scribbles without a name, or a sample started without one, pass."""
    named = scribbles.get("sequence") if isinstance(scribbles, dict) else None
    if sequence is not None and named is not None and named != sequence:
        raise ValueError(f"scribbles of sequence {named!r}, but the sample was started on {sequence!r}: call "
                         "start() with that video's frames first")


class Predictor(ABC):
    """Turns scribbles into a (T, H, W) integer label array for a whole video.

    `start` begins a new sample (a video with its objects) and forgets everything from the previous one;
    `step` receives only the scribbles that are new this round and returns labels for every frame.
    """

    name: str = "predictor"

    @abstractmethod
    def start(self, frames: np.ndarray, num_objects: int, sequence: str | None = None) -> None:
        """frames: (T, H, W, 3) uint8 RGB of the sample's video; sequence: its name, if known (check_sequence)."""

    @abstractmethod
    def step(self, scribbles: dict, plan: RoundPlan | None = None) -> np.ndarray:
        """New scribbles (DAVIS dict) -> (T, H, W) int64 labels, 0 background, 1..num_objects."""

    def prepare(self, frame_sizes) -> None:
        """Called once before any sample's clock runs, with every (H, W) the videos have: one-off set-up."""
        return None

    def next_scribble_frame_candidates(self, count: int) -> list[int] | None:
        """Frames the evaluator should pick the next scribble from (None: let it choose)."""
        return None
