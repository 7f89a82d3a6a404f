"""A non-learned baseline that says what it is: paint each object's dilated scribbles on their frame,
then give every frame the painted labels of the nearest scribbled frame. No appearance model at all,
so it measures what the evaluation gives for nearly free; the real agent must beat it by far."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data.davis import validate_scribbles
from ..inference.plan import RoundPlan
from ..inference.predictor import Predictor, check_num_objects, check_sequence, sample_frames
from ..inference.scribbles import UNLABELED, rasterize_scribbles


class ScribblePaintBaseline(Predictor):
    name = "baseline"

    def __init__(self, dilation: int = 15) -> None:
        # A wide brush: the robot's and humans' strokes are thin lines through the object's middle.
        if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
            # 0 was scipy's "structure must not be empty" at the first step, -1 numpy's "negative dimensions"
            raise ValueError(f"dilation {dilation!r}: the brush's width in pixels, an integer >= 1 (1: no dilation)")
        self.dilation = int(dilation)
        self.painted: dict[int, np.ndarray] = {}

    def start(self, frames: np.ndarray, num_objects: int, sequence: str | None = None) -> None:
        # As InteractiveAgent (a list was "'list' object has no attribute 'shape'", and num_objects 0 or -1 refused
        # every stroke in each later step as beyond "the video has -1 object(s)").
        frames = sample_frames(frames, copy=False)
        check_num_objects(num_objects)
        self.num_frames, self.height, self.width = frames.shape[:3]
        self.num_objects = num_objects
        self.sequence = sequence
        self.painted = {}

    def step(self, scribbles: dict, plan: RoundPlan | None = None) -> np.ndarray:
        if not hasattr(self, "num_frames"):
            raise RuntimeError("call start(frames, num_objects) before step(scribbles)")
        # As InteractiveAgent: an id above num_objects was dropped, 1.7 painted as 1, a stroke on a frame past
        # the video's end painted every frame, and a null id was int()'s TypeError (DatasetError, one line).
        check_sequence(self.sequence, scribbles)
        validate_scribbles(scribbles, num_frames=self.num_frames, num_objects=self.num_objects)
        strokes = rasterize_scribbles(scribbles, (self.height, self.width))
        for frame, labels in strokes.items():
            canvas = self.painted.get(frame, np.zeros((self.height, self.width), np.int64))
            structure = np.ones((self.dilation, self.dilation), bool)
            # background strokes (0) erase; num_objects None (as the agent takes it): the ids drawn
            for object_id in np.unique(labels[labels != UNLABELED]).tolist():
                grown = ndimage.binary_dilation(labels == object_id, structure)
                canvas[grown] = object_id
            self.painted[frame] = canvas
        out = np.zeros((self.num_frames, self.height, self.width), np.int64)
        if self.painted:
            annotated = np.array(sorted(self.painted))
            for t in range(self.num_frames):
                out[t] = self.painted[int(annotated[np.abs(annotated - t).argmin()])]
        return out
