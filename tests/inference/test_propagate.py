"""Keyframe selection and nearest-keyframe filling used by rounds that propagate to a subset of frames."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.propagate import fill_between_keyframes, nearest_keyframe, select_keyframes


def test_select_keyframes_takes_every_nth_the_last_and_the_scribbled():
    assert select_keyframes(10, 4).tolist() == [0, 4, 8, 9]
    assert select_keyframes(10, 4, always={5, 8}).tolist() == [0, 4, 5, 8, 9]
    assert select_keyframes(3, 1).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="stride"):
        select_keyframes(10, 0)


def test_nearest_keyframe_prefers_the_earlier_on_ties():
    keyframes = np.array([0, 4, 8, 9])
    positions = nearest_keyframe(keyframes, 10)
    assert keyframes[positions].tolist() == [0, 0, 0, 4, 4, 4, 4, 8, 8, 9]
    assert nearest_keyframe(np.array([3]), 5).tolist() == [0] * 5


def test_frames_between_keyframes_copy_them_without_a_last_round():
    labels = np.zeros((3, 2, 2), np.int64)
    labels[0] = [[1, 0], [0, 2]]
    fill_between_keyframes(labels, np.array([1, 2]), np.array([0, 0]))
    assert (labels[1] == labels[0]).all() and (labels[2] == labels[0]).all()


def test_frames_between_keyframes_keep_the_last_round_but_where_their_keyframe_changed():
    previous = np.array([[[0, 0], [1, 1]], [[0, 1], [1, 1]]])  # frame 1 had its own, finer labels
    labels = previous.copy()
    labels[0, 0, 0] = 2  # this round changed one pixel of keyframe 0
    fill_between_keyframes(labels, np.array([1]), np.array([0]), previous)
    assert labels[1].tolist() == [[2, 1], [1, 1]]
