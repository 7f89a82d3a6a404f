"""Labels moved along optical flow (inference/flow.py) and the keyframe fill that uses it (propagate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import ConfigError, FlowConfig
from agent.inference.flow import FlowWarper
from agent.inference.propagate import fill_between_keyframes


def moving_square(num_frames: int = 5, step: int = 6, size: tuple[int, int] = (96, 160)):
    """Frames of a textured square moving right by `step` pixels per frame over a textured background, and
    its masks."""
    rng = np.random.default_rng(0)
    height, width = size
    background = (rng.random((height, width + 64)) * 80).astype(np.uint8)
    texture = (120 + rng.random((32, 32)) * 135).astype(np.uint8)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.int64)
    for t in range(num_frames):
        gray = background[:, :width].copy()
        x = 20 + step * t
        gray[32:64, x:x + 32] = texture
        masks[t, 32:64, x:x + 32] = 1
        frames[t] = gray[..., None]
    return frames, masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_warped_labels_follow_the_object_where_a_copy_stays_behind():
    frames, masks = moving_square()
    warper = FlowWarper(frames, FlowConfig())
    (moved,) = warper.warp(2, 0, masks[0])
    assert moved.dtype == masks.dtype
    assert iou(moved == 1, masks[2] == 1) > 0.85
    assert iou(masks[0] == 1, masks[2] == 1) < 0.65  # the copy in place


def test_warp_keeps_label_values_and_mask_dtypes():
    frames, masks = moving_square()
    labels = masks * 7  # an object id other than 1 is moved, not blended
    flags = masks.astype(bool)
    moved, moved_flags = FlowWarper(frames, FlowConfig(preset="medium", height=48)).warp(1, 0, labels[0], flags[0])
    assert set(np.unique(moved)) <= {0, 7}
    assert moved_flags.dtype == bool and moved_flags.any()


def test_fill_moves_keyframe_labels_along_the_flow_frame_by_frame():
    frames, masks = moving_square(num_frames=5)
    labels = np.zeros_like(masks)
    labels[0], labels[4] = masks[0], masks[4]
    others, source = np.array([1, 2, 3]), np.array([0, 0, 4])  # frame 2's tie goes to the earlier keyframe
    fill_between_keyframes(labels, others, source, warper=FlowWarper(frames, FlowConfig()))
    for t in others:
        assert iou(labels[t] == 1, masks[t] == 1) > 0.85, t
    copied = np.zeros_like(masks)
    copied[0], copied[4] = masks[0], masks[4]
    fill_between_keyframes(copied, others, source)  # no warper: copies in place
    assert (copied[1] == masks[0]).all() and (copied[3] == masks[4]).all()


def test_fill_with_the_last_round_moves_only_what_the_keyframe_changed():
    frames, masks = moving_square(num_frames=3)
    previous = np.zeros_like(masks)
    previous[1, :8, :8] = 2  # frame 1's own labels from the last round, far from the object
    labels = previous.copy()
    labels[0] = masks[0]  # this round found the object on keyframe 0
    fill_between_keyframes(labels, np.array([1, 2]), np.array([0, 0]), previous, FlowWarper(frames, FlowConfig()))
    assert (labels[1, :8, :8] == 2).all()  # unchanged there: the last round's labels stay
    assert iou(labels[1] == 1, masks[1] == 1) > 0.85 and iou(labels[2] == 1, masks[2] == 1) > 0.85


@pytest.mark.parametrize("field, value", [("preset", "slow"), ("height", 8), ("height", 480.5), ("height", True)])
def test_flow_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"flow.{field}"):
        FlowConfig(**{field: value})


@pytest.mark.parametrize("size", [(2, 2), (8, 40), (15, 15), (600, 10), (16, 200), (8, 200), (20, 640), (31, 1000)])
def test_frames_too_small_for_the_flow_are_moved_not_crashed(size):
    """OpenCV's DIS kills the process on images under 16 pixels a side, and on wide strips under 32 pixels high
    (16x200 a segfault, 20x640 a cv2.error): tiny (or very thin) frames are scaled up to 32 a side for the flow."""
    frames = np.random.default_rng(0).integers(0, 255, (2, *size, 3), dtype=np.uint8)
    labels = np.zeros(size, np.int64)
    labels[: size[0] // 2] = 1
    (moved,) = FlowWarper(frames, FlowConfig()).warp(1, 0, labels)
    assert moved.shape == size and set(np.unique(moved)) <= {0, 1}
