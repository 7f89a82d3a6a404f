"""Round fusion: the weights by distance to the strokes, the blend, new classes and copied frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.inference.round_fusion import RoundFusion, fusion_weights
from agent.inference.transfer import ABSENT_SCORE


def test_weights_are_one_on_stroke_frames_and_fall_with_distance():
    weights = fusion_weights(10, [2, 7], decay_frames=2.0)
    assert weights[2] == weights[7] == 1.0
    assert weights[0] == pytest.approx(np.exp(-1.0))
    assert weights[4] == pytest.approx(np.exp(-1.0))  # nearest stroke frame decides (2, not 7)
    assert weights[5] == pytest.approx(np.exp(-1.0))
    assert np.all(np.diff(weights[7:]) < 0)
    assert not fusion_weights(5, [], 2.0).any()  # no stroke: the last round stays


def _scores(value_object: float, frames: int = 5) -> torch.Tensor:
    scores = torch.zeros(frames, 2, 3, 4)
    scores[:, 1] = value_object
    return scores


def test_first_round_passes_through_and_later_rounds_blend_by_distance():
    fusion = RoundFusion(5, decay_frames=1.0)
    fusion.begin([0])
    first = _scores(2.0)
    assert torch.equal(fusion.fuse(np.arange(5), first), first)
    fusion.begin([4])
    fused = fusion.fuse(np.arange(5), _scores(-2.0))
    weights = torch.from_numpy(fusion_weights(5, [4], 1.0))
    assert torch.allclose(fused[:, 1, 0, 0], weights * -2.0 + (1 - weights) * 2.0)
    assert fused[4, 1, 0, 0] == -2.0 and fused[0, 1, 0, 0] > 1.9  # the stroke's frame vs the far end
    # The next round blends with the fused scores, not with round 1's.
    fusion.begin([])
    again = fusion.fuse(np.arange(5), _scores(5.0))
    assert torch.allclose(again, fused)


def test_a_new_object_takes_its_new_scores_everywhere():
    fusion = RoundFusion(3, decay_frames=1.0)
    fusion.begin([0])
    fusion.fuse(np.arange(3), torch.zeros(3, 2, 2, 2))
    fusion.begin([0])
    new = torch.ones(3, 3, 2, 2)  # object 2 appears this round
    fused = fusion.fuse(np.arange(3), new)
    assert torch.equal(fused[:, 2], new[:, 2])
    assert fused[2, 1, 0, 0] < 1.0  # object 1 is blended away from frame 0


def test_absent_classes_never_blend_into_finite_scores():
    fusion = RoundFusion(2, decay_frames=1.0)
    fusion.begin([0])
    old = torch.zeros(2, 2, 1, 1)
    old[:, 1] = ABSENT_SCORE  # no object reference yet
    fusion.fuse(np.arange(2), old)
    fusion.begin([0])
    fused = fusion.fuse(np.arange(2), torch.ones(2, 2, 1, 1))
    assert torch.equal(fused[:, 1], torch.ones(2, 1, 1))


def test_copied_frames_keep_their_sources_scores():
    fusion = RoundFusion(4, decay_frames=1.0)
    fusion.begin([0])
    fusion.fuse(np.array([0, 3]), torch.stack([torch.zeros(1, 1, 1), torch.ones(1, 1, 1)]).expand(2, 2, 1, 1))
    fusion.copy(np.array([1, 2]), np.array([0, 3]))
    fusion.begin([0])
    fused = fusion.fuse(np.arange(4), torch.zeros(4, 2, 1, 1))
    assert torch.equal(fused[1:3], torch.zeros(2, 2, 1, 1))  # copies are not kept against a transfer
    weights = fusion_weights(4, [0], 1.0)
    assert fused[3, 0, 0, 0] == pytest.approx(1 - weights[3])  # a transferred frame is blended
    assert (fusion.weights()[1:3] == 1).all()


def test_decay_must_be_positive():
    with pytest.raises(ValueError, match="decay_frames"):
        RoundFusion(3, 0.0)
