"""The scribble-painting baseline (`--predictor baseline`) checks its scribbles as the agent does."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agent.data.davis import DatasetError
from agent.evaluation.baseline import ScribblePaintBaseline

FRAMES = np.zeros((4, 30, 40, 3), np.uint8)


def _scribbles(object_id=1, frame=0, frames=4) -> dict:
    strokes = [[] for _ in range(frames)]
    strokes[frame] = [{"path": [[0.3, 0.3], [0.6, 0.6]], "object_id": object_id}]
    return {"scribbles": strokes}


@pytest.mark.parametrize(("scribbles", "fragment"), [
    (_scribbles(object_id=5), "object_id 5, but the video has 2 object(s)"),  # was dropped without a word
    (_scribbles(object_id=1.7), "object ids are integers"),  # was painted as 1
    (_scribbles(object_id=None), "object ids are integers"),  # was int()'s TypeError
    (_scribbles(frame=5, frames=6), "has 6 frames of strokes, the video has 4"),  # frame 5's strokes on every frame
], ids=["id-above-count", "float-id", "null-id", "too-many-frames"])
def test_bad_scribbles_are_one_line(scribbles, fragment):
    baseline = ScribblePaintBaseline()
    baseline.start(FRAMES, 2)
    with pytest.raises(DatasetError, match=re.escape(fragment)):
        baseline.step(scribbles)
    assert not baseline.painted  # nothing painted: the sample goes on with good scribbles
    assert set(np.unique(baseline.step(_scribbles(object_id=2)))) == {0, 2}


def test_step_before_start_and_an_unknown_object_count():
    baseline = ScribblePaintBaseline()
    with pytest.raises(RuntimeError, match=r"call start\(frames, num_objects\) before step"):  # an AttributeError
        baseline.step(_scribbles())
    baseline.start(FRAMES, None)  # as the agent takes it: a TypeError (None + 1)
    masks = baseline.step(_scribbles(object_id=3))
    assert masks.shape == FRAMES.shape[:3] and set(np.unique(masks)) == {0, 3}


@pytest.mark.parametrize(("frames", "num_objects", "fragment"), [
    (list(FRAMES), 2, None),  # a list of frames: was "'list' object has no attribute 'shape'"
    (FRAMES[..., 0], 2, "frames must be a (T, H, W, 3) uint8 array with T, H, W >= 1, got (4, 30, 40) uint8"),
    (None, 2, "frames must be a (T, H, W, 3) uint8 array"),  # an AttributeError
    (FRAMES, 0, "num_objects must be None or an integer in 1..254, got 0"),  # every later stroke was refused
    (FRAMES, 1.5, "num_objects must be None or an integer in 1..254, got 1.5"),
], ids=["list", "grey", "none", "zero-objects", "float-count"])
def test_start_checks_its_frames_and_object_count_as_the_agent_does(frames, num_objects, fragment):
    baseline = ScribblePaintBaseline()
    if fragment is None:
        baseline.start(frames, num_objects)
        assert baseline.step(_scribbles()).shape == FRAMES.shape[:3]
        return
    with pytest.raises(ValueError, match=re.escape(fragment)):
        baseline.start(frames, num_objects)


@pytest.mark.parametrize("dilation", [0, -3, 2.5, True, "15"])
def test_a_bad_dilation_is_refused_by_the_constructor(dilation):
    # 0 was scipy's "structure must not be empty" at the first step, -3 numpy's "negative dimensions"
    with pytest.raises(ValueError, match=r"^dilation .*: the brush's width in pixels, an integer >= 1"):
        ScribblePaintBaseline(dilation=dilation)
    assert ScribblePaintBaseline(dilation=np.int64(1)).dilation == 1


def test_scribbles_of_another_sequence_are_refused_as_the_agent_does():
    baseline = ScribblePaintBaseline()
    baseline.start(FRAMES, 2, sequence="dog")
    with pytest.raises(ValueError, match="scribbles of sequence 'goat', but the sample was started on 'dog'"):
        baseline.step({**_scribbles(), "sequence": "goat"})
    assert not baseline.painted
    assert set(np.unique(baseline.step({**_scribbles(), "sequence": "dog"}))) == {0, 1}
