"""Round fusion: a new round's class scores replace the last round's by a weight that falls with the
temporal distance to the frames the new strokes are on.

Why: a stroke is evidence about its own frame and its neighbours. Through the global transfer it also
raises its class's score on every frame that has similar-looking pixels, and far from the stroke that
more often takes pixels that were right (a background stroke on one frame eating the object at the other
end of the video). Blending in the previous round's scores there keeps the frames a stroke says little
about as they were, while the stroke's own frame (weight 1) and its neighbours take the new transfer.
"""

from __future__ import annotations

import numpy as np
import torch

from .transfer import ABSENT_SCORE


def fusion_weights(num_frames: int, stroke_frames: list[int] | np.ndarray, decay_frames: float) -> np.ndarray:
    """(num_frames,) weight of the new round per frame: exp(-distance to the nearest stroke frame /
    decay_frames); 1 on the stroke frames, 0 everywhere when there is no stroke frame."""
    strokes = np.asarray(list(stroke_frames), np.float64)
    if len(strokes) == 0:
        return np.zeros(num_frames, np.float32)
    distance = np.abs(np.arange(num_frames)[:, None] - strokes[None, :]).min(1)
    return np.exp(-distance / decay_frames).astype(np.float32)


class RoundFusion:
    """One sample's last fused scores (T, C, h, w) on the transfer grid, and the blend of a new round into them.

    A frame whose last labels were copied from a keyframe (a fast round that transferred to keyframes only) takes
    the next round's scores in full: a copy is no transfer of that frame to keep.

    Usage per round: `begin(stroke_frames)`, then `fuse(index, scores)` for each batch of computed frames
    (returns the scores to label them by), then `copy(frames, source)` for frames that take another frame's
    labels (keyframe rounds). The first round has nothing to blend with and passes its scores through.
    """

    def __init__(self, num_frames: int, decay_frames: float) -> None:
        if not decay_frames > 0:
            raise ValueError(f"decay_frames must be > 0, got {decay_frames}")
        self.num_frames = num_frames
        self.decay_frames = decay_frames
        self._scores: torch.Tensor | None = None  # (T, C, h, w) float32, the last round's fused scores
        self._weights = np.ones(num_frames, np.float32)
        # Frames whose stored scores were transferred, not copied from a keyframe: only those are blended.
        self._transferred = np.zeros(num_frames, bool)

    def begin(self, stroke_frames: list[int] | np.ndarray) -> None:
        # Nothing transferred yet (the first round) or only copied: the new scores in full.
        self._weights = fusion_weights(self.num_frames, stroke_frames, self.decay_frames)
        self._weights[~self._transferred] = 1.0

    def weights(self) -> np.ndarray:
        """(T,) this round's weight of the new scores per frame."""
        return self._weights.copy()

    def fuse(self, index: np.ndarray, scores: torch.Tensor) -> torch.Tensor:
        """Scores (B, C, h, w) of frames `index` -> the blend with the last round's, which it then replaces.
        A class the last round had no reference for (a new object, or one absent then) takes the new scores."""
        index = np.asarray(index, np.int64)
        scores = scores.float().cpu()
        if self._scores is None:  # every class absent so far: the first round's scores pass through
            self._scores = torch.full((self.num_frames, *scores.shape[1:]), ABSENT_SCORE, dtype=torch.float32)
        if scores.shape[1] > self._scores.shape[1]:  # a new object: its class had no scores yet
            extra = scores.shape[1] - self._scores.shape[1]
            pad = torch.full((self.num_frames, extra, *self._scores.shape[2:]), ABSENT_SCORE)
            self._scores = torch.cat([self._scores, pad], 1)
        old = self._scores[torch.from_numpy(index)][:, :scores.shape[1]]
        weight = torch.from_numpy(self._weights[index]).view(-1, 1, 1, 1)
        absent = (old <= ABSENT_SCORE / 2) | (scores <= ABSENT_SCORE / 2)
        fused = torch.where(absent, scores, weight * scores + (1 - weight) * old)
        self._scores[torch.from_numpy(index), :scores.shape[1]] = fused
        self._transferred[index] = True
        return fused

    def copy(self, frames: np.ndarray, source: np.ndarray) -> None:
        """Frames whose labels were copied from `source` (same length) keep the source's fused scores too,
        as a copy: the next round that computes them takes its own scores there in full."""
        if self._scores is not None and len(frames):
            frames = np.asarray(frames, np.int64)
            self._scores[torch.from_numpy(frames)] = self._scores[torch.from_numpy(np.asarray(source, np.int64))]
            self._transferred[frames] = False
