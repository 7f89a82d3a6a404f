"""Keyframe selection and nearest-keyframe filling used by rounds that propagate to a subset of frames."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.propagate import nearest_keyframe, select_keyframes


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
