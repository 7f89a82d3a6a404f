"""Stroke-like reference labels for training: what the agent's first round sees instead of a whole mask.

Round 1 transfers from a thin stroke through the object (the robot draws the skeleton of the missed
region) and from the background derived far away from it, not from a frame's whole ground truth. A loss
that only ever sees whole masks as references never trains that regime, so a step may replace its
reference view's labels by each object's skeleton plus the far-away background the agent would derive.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.morphology import skeletonize

from ..inference.scribbles import BACKGROUND, UNLABELED, far_background


def stroke_labels(labels: torch.Tensor, far_fraction: float) -> torch.Tensor:
    """(h, w) int64 labels (-1 void) -> the same grid labelled only on each object's skeleton and on the
    background farther than `far_fraction` x the diagonal from every skeleton pixel; -1 elsewhere.

    An object too small to have a skeleton keeps all its pixels (a stroke would cover it). Without objects
    the labels are returned unchanged (the agent's first round needs an object stroke).
    """
    dense = labels.cpu().numpy()
    out = np.full(dense.shape, UNLABELED, np.int64)
    for cls in np.unique(dense[dense > BACKGROUND]).tolist():
        region = dense == cls
        skeleton = skeletonize(region)
        out[skeleton if skeleton.any() else region] = cls
    if not (out > BACKGROUND).any():
        return labels.clone()
    out[far_background(out, far_fraction) & (dense == BACKGROUND)] = BACKGROUND
    return torch.from_numpy(out)
