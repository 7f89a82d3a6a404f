"""Object identity by position (inference/identity.py): lookalike objects are told apart by where they were on
the neighbouring keyframe, and foreground against background is never changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import AgentConfig, ConfigError, IdentityConfig, TransferConfig
from agent.inference.agent import InteractiveAgent
from agent.inference.identity import lookalikes, penalties, separate_objects, stroked_regions, sweep_order
from agent.inference.plan import RoundPlan
from agent.inference.propagate import propagate


def test_sweep_goes_outward_from_the_anchors():
    assert sweep_order(np.array([0, 4, 8, 12, 16]), {8}) == [(2, None), (1, 2), (3, 2), (0, 1), (4, 3)]
    # each keyframe follows its nearest anchor; the one halfway between two follows the earlier
    assert sweep_order(np.array([0, 4, 8, 12, 16]), {0, 16}) == [(0, None), (4, None), (1, 0), (3, 4), (2, 1)]
    assert sweep_order(np.array([3, 5]), set()) == [(0, None), (1, None)]


def test_penalty_is_zero_within_reach_and_grows_beyond():
    positions = np.zeros((1, 40), np.int64)
    positions[0, 0], positions[0, 39] = 1, 3
    out = penalties(positions, 4, reach=6.0, weight=0.5)
    assert out.shape == (4, 1, 40)
    assert not out[0].any() and not out[2].any()  # background, and an object not in `positions`
    # cell x is x cells from object 1 and 39 - x from object 3: each loses 0.5 per cell beyond 6 more
    x = np.arange(40)
    np.testing.assert_allclose(out[3, 0], 0.5 * np.maximum(39 - 2 * x - 6, 0))
    np.testing.assert_allclose(out[1, 0], 0.5 * np.maximum(2 * x - 39 - 6, 0))
    assert (out[1, 0, :23] == 0).all() and (out[3, 0, 17:] == 0).all()
    capped = penalties(positions, 4, reach=6.0, weight=0.5, cap=1.0)
    np.testing.assert_allclose(capped, np.minimum(out, 1.0))
    positions[0, 39] = 0  # a lone object has no rival to lose to
    assert not penalties(positions, 4, reach=0.0, weight=1.0).any()


def test_penalty_is_relative_to_the_nearest_object():
    positions = np.zeros((1, 30), np.int64)
    positions[0, 0], positions[0, 20] = 1, 2
    out = penalties(positions, 3, reach=0.0, weight=1.0)
    # cell 12: 12 cells from object 1, 8 from object 2: object 1 loses 4, object 2 nothing
    assert out[1, 0, 12] == 4.0 and out[2, 0, 12] == 0.0
    assert out[1, 0, 10] == 0.0 and out[2, 0, 10] == 0.0  # halfway


def _two_blobs(frames: int, swap_from: int) -> torch.Tensor:
    """Scores (T, 3, 8, 40): two foreground blobs moving right one cell per frame; the transfer gives the left
    blob to object 1 and the right one to object 2 up to frame `swap_from`, then by a small margin the other
    way round (lookalike objects)."""
    scores = torch.zeros(frames, 3, 8, 40)
    scores[:, 0] = 1.0
    for t in range(frames):
        left, right = slice(2 + t, 8 + t), slice(24 + t, 30 + t)
        first, second = (3.0, 2.0) if t < swap_from else (2.0, 2.1)
        scores[t, 1, 2:6, left], scores[t, 2, 2:6, left] = first, second
        scores[t, 1, 2:6, right], scores[t, 2, 2:6, right] = second, first
    return scores


def test_separate_objects_follows_each_object_from_the_anchor():
    scores = _two_blobs(6, swap_from=2)
    strokes = np.zeros((8, 40), np.int64)
    strokes[3, 4], strokes[3, 26] = 1, 2  # frame 0: a stroke inside each blob
    out = separate_objects(scores, np.arange(6), {0: strokes}, IdentityConfig())
    labels = out.argmax(1)
    for t in range(6):
        assert (labels[t, 2:6, 2 + t:8 + t] == 1).all() and (labels[t, 2:6, 24 + t:30 + t] == 2).all()
    # only the choice between objects moved: the best object's score and so foreground are the transfer's
    torch.testing.assert_close(out[:, 1:].amax(1), scores[:, 1:].amax(1))
    torch.testing.assert_close(out[:, 0], scores[:, 0])
    assert (scores.argmax(1)[:, 2:6, 2:8] > 0).all() == (labels[:, 2:6, 2:8] > 0).all()
    # without it the lookalikes swap
    assert (scores.argmax(1)[5, 2:6, 7:13] == 2).all()


def test_without_strokes_each_keyframe_keeps_the_transfers_choice():
    scores = _two_blobs(4, swap_from=2)
    out = separate_objects(scores, np.arange(4), {}, IdentityConfig())
    np.testing.assert_array_equal(out.argmax(1), scores.argmax(1))


def test_a_lone_object_and_weight_zero_are_untouched():
    scores = torch.randn(4, 2, 6, 9)
    assert separate_objects(scores, np.arange(4), {0: np.ones((6, 9))}, IdentityConfig()) is scores
    three = _two_blobs(4, swap_from=1)
    for off in (IdentityConfig(weight=0.0), IdentityConfig(cap=0.0)):
        assert separate_objects(three, np.arange(4), {0: np.ones((8, 40))}, off) is three


@pytest.mark.parametrize("field", ["weight", "radius", "speed", "cap", "alike_margin"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"identity.{field}"):
        IdentityConfig(**{field: value})


# --- in propagate and the agent --------------------------------------------------------------------------
def test_propagate_separates_objects_from_the_strokes(tiny_model):
    """Lookalike blobs whose transfer swaps from frame 2 on, seen through propagate's scorer hook: with
    identity each blob keeps the object its stroke gave it; every other frame copies its keyframe."""
    scores = _two_blobs(8, swap_from=2)
    frames = np.zeros((8, 8, 40, 3), np.uint8)
    strokes = np.full((8, 40), -1, np.int64)
    strokes[3, 4], strokes[3, 26] = 1, 2

    def play(identity):
        return propagate(tiny_model, torch.zeros(8, 1, 1, 1), None, None, 3, frames, (8, 40), TransferConfig(),
                         None, scorer=lambda index: scores[index], keyframes=np.array([0, 2, 4, 6, 7]),
                         identity=identity, strokes={0: strokes}).labels

    separated, appearance = play(IdentityConfig()), play(None)
    for t in (2, 4, 6, 7):
        assert (separated[t, 2:6, 2 + t:8 + t] == 1).all() and (separated[t, 2:6, 24 + t:30 + t] == 2).all()
        assert (appearance[t, 2:6, 2 + t:8 + t] == 2).all()  # without it, the transfer's swap
    np.testing.assert_array_equal(separated[3], separated[2])  # a frame between keyframes copies
    np.testing.assert_array_equal(separated > 0, appearance > 0)


def test_stroked_regions_gives_a_region_to_its_only_stroked_object():
    labels = np.zeros((5, 12), np.int64)
    labels[1:4, 1:4] = 2  # the transfer says object 2, but only object 1 is stroked in it
    labels[1:4, 6:11] = 1
    labels[2, 8:11] = 2  # a region with strokes of both objects keeps the transfer's labels
    strokes = np.zeros((5, 12), np.int64)
    strokes[2, 2] = 1
    strokes[1, 7], strokes[3, 9] = 1, 2
    out = stroked_regions(labels, strokes)
    assert (out[1:4, 1:4] == 1).all()
    np.testing.assert_array_equal(out[:, 5:], labels[:, 5:])


def test_agent_leaves_a_lone_object_and_foreground_as_they_were(tiny_checkpoint, tiny_synthetic_root, one_torch_thread):
    """In the agent, with the CRF off: the identity step never changes foreground against background, and a
    video of one object gets the same labels with it on or off."""
    from agent.data.davis import DavisReader

    reader = DavisReader(tiny_synthetic_root)
    for sequence in reader.sequences("val")[:2]:  # one object, then two
        frames = reader.load_frames(sequence)
        scribble = reader.load_scribble(sequence, 1)
        labels = {}
        for weight in (0.0, 0.5):
            agent = InteractiveAgent.from_pretrained(tiny_checkpoint, AgentConfig(
                device="cpu", identity=IdentityConfig(weight=weight)))
            agent.start(frames)
            labels[weight] = agent.step(scribble, RoundPlan(use_crf=False))
        np.testing.assert_array_equal(labels[0.5] > 0, labels[0.0] > 0)
        if labels[0.0].max() <= 1:
            np.testing.assert_array_equal(labels[0.5], labels[0.0])


def test_a_region_stroked_for_several_objects_goes_to_the_nearest_stroke():
    labels = np.zeros((3, 12), np.int64)
    labels[:, 1:11] = 2  # lookalikes touching: one region, all given to object 2 by the transfer
    strokes = np.zeros((3, 12), np.int64)
    strokes[1, 2], strokes[1, 9] = 1, 2
    np.testing.assert_array_equal(stroked_regions(labels, strokes), labels)  # not lookalikes: the transfer's
    np.testing.assert_array_equal(stroked_regions(labels, strokes, nearest={1}), labels)
    out = stroked_regions(labels, strokes, nearest={1, 2})
    assert (out[:, 1:6] == 1).all() and (out[:, 6:11] == 2).all()
    assert not out[:, 0].any() and not out[:, 11].any()  # background stays background


def test_penalty_reach_may_differ_per_object():
    positions = np.zeros((1, 30), np.int64)
    positions[0, 0], positions[0, 20] = 1, 2
    out = penalties(positions, 3, reach=np.array([0.0, 0.0, 4.0]), weight=1.0)
    assert out[1, 0, 12] == 4.0  # object 1: no reach, loses all 12 - 8 cells
    # object 2: 4 cells of reach (cell 9 is 2 cells nearer object 1, cell 6 8 cells, cell 2 16)
    assert out[2, 0, 9] == 0.0 and out[2, 0, 6] == 4.0 and out[2, 0, 2] == 12.0


def test_lookalikes_are_the_objects_that_lead_their_rivals_by_little_at_their_strokes():
    scores = torch.zeros(2, 4, 4, 10)
    scores[0, 1, :, :5], scores[0, 2, :, :5] = 3.0, 2.5  # object 1's stroke cells: it leads object 2 by 0.5
    scores[0, 2, :, 5:], scores[0, 3, :, 5:] = 4.0, 1.0  # object 2's: it leads object 3 by 3
    strokes = np.zeros((4, 10), np.int64)
    strokes[1, 1:4], strokes[1, 6:9] = 1, 2
    assert lookalikes(scores, np.array([3, 7]), {3: strokes}, margin=1.75) == {1}
    assert lookalikes(scores, np.array([3, 7]), {3: strokes}, margin=5.0) == {1, 2}
    assert lookalikes(scores, np.array([3, 7]), {3: strokes}, margin=0.0) == set()
    assert lookalikes(scores, np.array([3, 7]), {5: strokes}, margin=5.0) == set()  # not a keyframe: no evidence


def test_only_lookalikes_are_held_to_their_place():
    """Two blobs 2 cells apart; on frame 1 the transfer gives the left blob's right edge to object 2 by 1.0. Told
    apart by appearance at the strokes (they lead by 3), objects keep a reach there and appearance decides;
    lookalikes (they lead by less than alike_margin) have none, and the nearer place wins."""
    scores = torch.zeros(2, 3, 4, 20)
    scores[:, 0] = 1.0
    scores[:, 1, :, 2:8], scores[:, 2, :, 10:16] = 5.0, 5.0
    scores[1, 2, :, 6:8], scores[1, 1, :, 6:8] = 6.0, 5.0  # frame 1: the left blob's edge looks like object 2
    strokes = np.zeros((4, 20), np.int64)
    strokes[1, 3], strokes[1, 12] = 1, 2
    distinct = separate_objects(scores, np.arange(2), {0: strokes}, IdentityConfig(alike_margin=1.75)).argmax(1)
    assert (distinct[1, :, 6:8] == 2).all()  # within the reach: appearance decides
    alike = separate_objects(scores, np.arange(2), {0: strokes}, IdentityConfig(alike_margin=10.0)).argmax(1)
    assert (alike[1, :, 2:8] == 1).all() and (alike[1, :, 10:16] == 2).all()


@pytest.mark.parametrize("correction", ["background", "one object"])
def test_a_correction_stroking_not_every_object_is_no_anchor(correction):
    """Lookalikes that swap in appearance from frame 2, both stroked on frame 0; a later round strokes frame 4 with
    the background alone, or object 1 alone: each blob keeps its object on every frame. As an anchor, frame 4 placed
    the objects by appearance (swapped) and carried that to frame 5."""
    scores = _two_blobs(6, swap_from=2)
    first = np.zeros((8, 40), np.int64)
    first[3, 4], first[3, 26] = 1, 2
    later = np.zeros((8, 40), np.int64)  # derived background and a background stroke: 0
    if correction == "one object":
        later[3, 6 + 4] = 1  # inside object 1's blob on frame 4 (columns 6..11)
    labels = separate_objects(scores, np.arange(6), {0: first, 4: later}, IdentityConfig()).argmax(1)
    for t in range(6):
        assert (labels[t, 2:6, 2 + t:8 + t] == 1).all() and (labels[t, 2:6, 24 + t:30 + t] == 2).all(), t
