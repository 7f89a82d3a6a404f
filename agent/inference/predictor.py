"""The interface the session drives: one predictor per sample, fed the new scribbles each round."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .plan import RoundPlan


class Predictor(ABC):
    """Turns scribbles into a (T, H, W) integer label array for a whole video.

    `start` begins a new sample (a video with its objects) and forgets everything from the previous one;
    `step` receives only the scribbles that are new this round and returns labels for every frame.
    """

    name: str = "predictor"

    @abstractmethod
    def start(self, frames: np.ndarray, num_objects: int) -> None:
        """frames: (T, H, W, 3) uint8 RGB of the sample's video."""

    @abstractmethod
    def step(self, scribbles: dict, plan: RoundPlan | None = None) -> np.ndarray:
        """New scribbles (DAVIS dict) -> (T, H, W) int64 labels, 0 background, 1..num_objects."""

    def prepare(self, frame_sizes) -> None:
        """Called once before any sample's clock runs, with every (H, W) the videos have: one-off set-up."""
        return None

    def next_scribble_frame_candidates(self, count: int) -> list[int] | None:
        """Frames the evaluator should pick the next scribble from (None: let it choose)."""
        return None
