"""The incremental reference pool: its running top-k equals a full transfer over the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import TransferConfig
from agent.inference.reference_pool import ReferencePool
from agent.inference.transfer import ABSENT_SCORE, transfer_labels
from agent.model.siamese import build_model
from tests.conftest import TINY_MODEL

TINY = TINY_MODEL
# Budgets above any frame's pixel count: nothing is subsampled, so the pool holds every labelled pixel.
NO_SUBSAMPLING = TransferConfig(topk=5, max_reference_pixels=10_000, max_new_reference_pixels=10_000, chunk_size=64)


@pytest.fixture
def model_and_features(one_torch_thread):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        features = model.extract_features(torch.rand(4, 3, *TINY.input_size))
    return model, features


def _labels(grid, boxes):
    out = np.full(grid, -1, np.int64)
    for cls, (r0, r1, c0, c1) in boxes:
        out[r0:r1, c0:c1] = cls
    return out


def _full_scores(model, features, grid, labels, num_classes, config):
    """transfer_labels (topk) from every labelled pixel of `labels` {frame: (h, w)}."""
    frames = sorted(labels)
    with torch.no_grad():
        emb = model.decode(features[frames].float(), grid)
        query = model.decode(features.float(), grid)
    refs = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    lab = torch.from_numpy(np.stack([labels[f] for f in frames]).reshape(-1))
    return transfer_labels(query, refs[lab >= 0], lab[lab >= 0], config, model.head, num_classes=num_classes).scores


def _assert_equals_full_transfer(pool, model, features, labels, num_classes):
    expected = _full_scores(model, features, pool.grid, labels, num_classes, NO_SUBSAMPLING)
    torch.testing.assert_close(pool.scores(model, range(len(features))), expected)


def test_incremental_rounds_equal_a_full_transfer(model_and_features):
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    round1 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}
    pool.update(model, features, round1, num_classes=3)
    _assert_equals_full_transfer(pool, model, features, round1, 3)
    assert (pool.scores(model, range(4))[:, 2] == ABSENT_SCORE).all()  # object 2 has no pixel yet

    # Round 2 adds pixels on frame 0 (old ones untouched) and a new frame with the second object.
    round2 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20)), (1, (5, 6, 1, 3))]),
              2: _labels(grid, [(2, (3, 5, 3, 9)), (0, (0, 2, 0, 20))])}
    pool.update(model, features, round2, num_classes=3)
    assert pool.rebuilds == 0
    _assert_equals_full_transfer(pool, model, features, round2, 3)
    assert pool.references(1) == 3 * 5 + 2 and pool.references(2) == 2 * 6


def test_relabelled_pixel_rebuilds_the_pool_and_receded_background_stays(model_and_features):
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    first = {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}
    pool.update(model, features, first, num_classes=2)
    # Background receded (e.g. far-away background shrank): pooled pixels stay, nothing is recomputed.
    pool.update(model, features, {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 10, 10, 20))])}, num_classes=2)
    assert pool.rebuilds == 0
    _assert_equals_full_transfer(pool, model, features, first, 2)
    # A stroke turns pooled background into the object: the top-k cannot forget, so the pool starts over.
    relabelled = {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20)), (1, (8, 9, 10, 12))])}
    pool.update(model, features, relabelled, num_classes=2)
    assert pool.rebuilds == 1
    _assert_equals_full_transfer(pool, model, features, relabelled, 2)
    pool.update(model, features, relabelled, num_classes=2, rebuild=True)  # e.g. the model was fine-tuned
    assert pool.rebuilds == 2


def test_receded_background_is_forgotten_when_asked(model_and_features):
    """An object stroked for the first time in a later round lifts the derived background where it may be: the
    pooled pixels of that background go (they stayed, background evidence against the new object on every frame)."""
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    pool.update(model, features, {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}, num_classes=3)
    receded = {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 10, 10, 20))]), 2: _labels(grid, [(2, (3, 5, 3, 9))])}
    pool.update(model, features, receded, num_classes=3, forget_receded=True)
    assert pool.rebuilds == 1 and pool.references(0) == 2 * 10
    _assert_equals_full_transfer(pool, model, features, receded, 3)
    pool.update(model, features, receded, num_classes=3, forget_receded=True)  # nothing receded since: kept
    assert pool.rebuilds == 1


def test_new_pixels_per_round_are_capped(model_and_features):
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    config = TransferConfig(topk=5, max_reference_pixels=30, max_new_reference_pixels=7)
    pool = ReferencePool(len(features), grid, config)
    pool.update(model, features, {0: _labels(grid, [(1, (0, 6, 0, 10)), (0, (6, 12, 0, 20))])}, 2)
    assert pool.references(0) == 30 and pool.references(1) == 30
    pool.update(model, features, {0: _labels(grid, [(1, (0, 6, 0, 10)), (0, (6, 12, 0, 20))]),
                                  3: _labels(grid, [(1, (0, 6, 0, 10)), (0, (6, 12, 0, 20))])}, 2)
    assert pool.rebuilds == 0 and pool.references(0) == 37 and pool.references(1) == 37
    scores = pool.scores(model, range(4))
    assert scores.shape == (4, 2, *grid) and torch.isfinite(scores).all()


def test_pool_needs_topk():
    with pytest.raises(ValueError, match="topk"):
        ReferencePool(2, (4, 4), TransferConfig(aggregation="eq3"))


def test_frames_left_out_catch_up_against_the_whole_pool(model_and_features):
    """A round that updates only keyframes, then one that asks for every frame: the late frames are built
    against every pooled pixel (both rounds'), so all frames equal a full transfer."""
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    round1 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}
    pool.update(model, features, round1, num_classes=2, frames=[0, 3])
    expected = _full_scores(model, features, grid, round1, 2, NO_SUBSAMPLING)
    torch.testing.assert_close(pool.scores(model, [0, 3]), expected[[0, 3]])
    with pytest.raises(RuntimeError, match=r"frames \[1\] were left out"):
        pool.scores(model, [0, 1])
    round2 = {0: round1[0], 2: _labels(grid, [(1, (3, 5, 3, 9)), (0, (0, 2, 0, 20))])}
    pool.update(model, features, round2, num_classes=2)
    assert pool.rebuilds == 0
    _assert_equals_full_transfer(pool, model, features, round2, 2)


def test_left_out_frames_are_rebuilt_after_a_reset(model_and_features):
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    pool.update(model, features, {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}, 2, frames=[1])
    relabelled = {1: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20)), (1, (8, 9, 10, 12))])}
    pool.update(model, features, relabelled, 2, frames=[1, 2])
    assert pool.rebuilds == 1
    expected = _full_scores(model, features, grid, relabelled, 2, NO_SUBSAMPLING)
    torch.testing.assert_close(pool.scores(model, [1, 2]), expected[[1, 2]])
    with pytest.raises(RuntimeError, match="left out"):
        pool.scores(model, [0])


def test_weighted_pixels_count_as_copies(model_and_features):
    """Pixels pooled with a weight (a correction's, transfer.correction_weight) fill that many top-k slots: equal to
    a full transfer from reference_set's repeated rows, folded in, caught up late, and after a rebuild."""
    from agent.inference.propagate import reference_set

    model, features = model_and_features
    grid = model.embedding_size(stride=4)

    def full(labels, weights):
        refs, classes = reference_set(model, features, {f: torch.from_numpy(v) for f, v in labels.items()}, grid,
                                      weights)
        with torch.no_grad():
            query = model.decode(features.float(), grid)
        return transfer_labels(query, refs, classes, NO_SUBSAMPLING, model.head, num_classes=2).scores

    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    round1 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}
    pool.update(model, features, round1, num_classes=2)
    round2 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20)), (0, (5, 6, 1, 3))]),
              2: _labels(grid, [(1, (3, 4, 3, 5))])}
    weights = {0: np.where(round2[0] != round1[0], 3, 1), 2: np.full(grid, 3)}
    pool.update(model, features, round2, num_classes=2, frames=[0, 3], weights=weights)
    expected = full(round2, weights)
    torch.testing.assert_close(pool.scores(model, [0, 3]), expected[[0, 3]])
    assert pool.references(0) == 4 * 10 + 3 * 2 and pool.references(1) == 3 * 5 + 3 * 2
    pool.update(model, features, round2, num_classes=2, weights=weights)  # frames 1 and 2 catch up
    torch.testing.assert_close(pool.scores(model, range(4)), expected)
    pool.update(model, features, round2, num_classes=2, rebuild=True, weights=weights)
    torch.testing.assert_close(pool.scores(model, range(4)), expected)
    # Unweighted, the same pixels score otherwise: the weight is what differs.
    assert not torch.allclose(full(round2, None), expected)


def test_a_built_frame_left_out_of_a_round_catches_up(model_and_features):
    """Built in round 1, left out of round 2 (a round on keyframes only), asked for in round 3 without new pixels:
    the frame must still get round 2's pixels."""
    model, features = model_and_features
    grid = model.embedding_size(stride=4)
    pool = ReferencePool(len(features), grid, NO_SUBSAMPLING)
    round1 = {0: _labels(grid, [(1, (1, 4, 1, 6)), (0, (8, 12, 10, 20))])}
    pool.update(model, features, round1, num_classes=2)
    round2 = {0: round1[0], 2: _labels(grid, [(1, (3, 5, 3, 9)), (0, (0, 2, 0, 20))])}
    pool.update(model, features, round2, num_classes=2, frames=[0, 2])
    with pytest.raises(RuntimeError, match=r"frames \[1, 3\] were left out"):
        pool.scores(model, range(4))
    pool.update(model, features, round2, num_classes=2)
    _assert_equals_full_transfer(pool, model, features, round2, 2)
