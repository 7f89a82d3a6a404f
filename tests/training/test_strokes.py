"""Stroke-like reference labels (agent/training/strokes.py): an object's skeleton and the far-away background."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from agent.training.strokes import stroke_labels


def two_objects() -> torch.Tensor:
    labels = torch.zeros(48, 80, dtype=torch.long)
    labels[8:30, 6:30] = 1  # a block
    labels[36:40, 40:76] = 2  # a thin bar
    labels[0, :5] = -1  # void
    return labels


def test_objects_keep_only_a_thin_stroke_inside_themselves() -> None:
    labels = two_objects()
    out = stroke_labels(labels, far_fraction=0.25)
    for cls in (1, 2):
        stroke = out == cls
        assert stroke.any() and bool((labels[stroke] == cls).all())
        assert int(stroke.sum()) < 0.3 * int((labels == cls).sum())  # a line, not the region
        # one pixel wide: eroding the stroke leaves nothing
        assert not ndimage.binary_erosion(stroke.numpy()).any()
    assert not (out[labels == -1] >= 0).any()


def test_background_only_far_from_every_stroke() -> None:
    labels = two_objects()
    out = stroke_labels(labels, far_fraction=0.25)
    background = (out == 0).numpy()
    assert background.any() and bool((labels[out == 0] == 0).all())
    distance = ndimage.distance_transform_edt(~(out > 0).numpy())
    limit = 0.25 * np.hypot(*labels.shape)
    assert distance[background].min() > limit
    # every background pixel that far is labelled; nearer ones are unlabelled
    assert bool(((labels == 0).numpy() & (distance > limit) == background).all())


def test_tiny_objects_and_frames_without_objects() -> None:
    labels = torch.zeros(20, 20, dtype=torch.long)
    labels[5, 5] = 1  # one pixel: its own stroke
    out = stroke_labels(labels, far_fraction=0.25)
    assert int(out[5, 5]) == 1 and int((out == 1).sum()) == 1
    empty = torch.zeros(20, 20, dtype=torch.long)
    assert torch.equal(stroke_labels(empty, 0.25), empty)
