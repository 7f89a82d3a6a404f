"""Label transfer: known answers, agreement with the definitions, chunking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agent.config import TransferConfig
from agent.inference.transfer import (
    ABSENT_SCORE,
    MIN_CHUNK,
    query_chunks,
    reference_pixels,
    transfer_from_frames,
    transfer_labels,
)
from agent.model.similarity import SimilarityHead, sample_pixels


def _head(weight: float = 0.8, bias: float = 0.1, mean: float = 0.3, var: float = 2.0) -> SimilarityHead:
    head = SimilarityHead().eval()
    with torch.no_grad():
        head.bn.weight.fill_(weight)
        head.bn.bias.fill_(bias)
        head.bn.running_mean.fill_(mean)
        head.bn.running_var.fill_(var)
    return head


@pytest.mark.parametrize("aggregation", ["eq3", "topk"])
def test_hand_made_case_has_the_known_answer(aggregation):
    # Class 0 points along x, class 1 along y; class 2 has no reference pixel.
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.05], [0.0, 1.0], [0.1, 0.9]])
    ref_labels = torch.tensor([0, 0, 0, 1, 1])
    query = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [-1.0, 0.1]]).t().reshape(1, 2, 2, 2)
    config = TransferConfig(aggregation=aggregation, samples_per_class=10, topk=2)
    result = transfer_labels(query, ref, ref_labels, config, head=_head(), num_classes=3)
    assert result.scores.shape == (1, 3, 2, 2)
    assert (result.scores[:, 2] == ABSENT_SCORE).all()
    assert result.labels.tolist() == [[[0, 1], [0, 1]]]


def test_negative_bn_scale_flips_the_answer_consistently():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]]).t().reshape(1, 2, 1, 1)
    for aggregation in ("eq3", "topk"):
        config = TransferConfig(aggregation=aggregation, topk=1)
        result = transfer_labels(query, ref, torch.tensor([0, 1]), config, head=_head(weight=-1.0))
        assert result.labels.item() == 1, aggregation  # the head learned "larger inner product = different"


def _random_case(seed: int = 0, classes: int = 4, dim: int = 8):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(2, dim, 9, 11, generator=gen)
    ref = torch.randn(300, dim, generator=gen)
    labels = torch.randint(-1, classes, (300,), generator=gen)
    labels[labels == 2] = -1  # class 2 absent
    return query, ref, labels


def _naive(query, ref, labels, config, head, seed):
    """Per query pixel, per class: mean over the (sub)sampled reference pixels / top-k of BN(q . r)."""
    limit = config.samples_per_class if config.aggregation == "eq3" else config.max_reference_pixels
    pooled = sample_pixels(labels, limit, torch.Generator().manual_seed(seed))
    q = query.permute(0, 2, 3, 1).reshape(-1, query.shape[1])
    out = torch.full((len(q), int(labels.max()) + 1), ABSENT_SCORE)
    for c in torch.unique(pooled.classes).tolist():
        sims = head.normalize(q @ ref[pooled.indices[pooled.classes == c]].t())
        if config.aggregation == "eq3":
            out[:, c] = sims.mean(1)
        else:
            out[:, c] = sims.topk(min(config.topk, sims.shape[1]), dim=1).values.mean(1)
    batch, _, h, w = query.shape
    return out.reshape(batch, h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "config",
    [
        TransferConfig(aggregation="eq3", samples_per_class=20),
        TransferConfig(aggregation="topk", topk=5, max_reference_pixels=40),
        TransferConfig(aggregation="topk", topk=500, max_reference_pixels=4096),  # k above the class size
    ],
)
def test_matches_the_definition(config):
    query, ref, labels = _random_case()
    head = _head()
    result = transfer_labels(query, ref, labels, config, head, generator=torch.Generator().manual_seed(5))
    expected = _naive(query, ref, labels, config, head, seed=5)
    assert torch.allclose(result.scores, expected, atol=1e-5)
    assert torch.equal(result.labels, result.scores.argmax(1))


@pytest.mark.parametrize("aggregation", ["eq3", "topk"])
def test_chunked_equals_unchunked(aggregation):
    query, ref, labels = _random_case(seed=1)
    query = torch.nn.functional.interpolate(query, size=(30, 41))  # 1230 pixels: several chunks
    results = []
    for chunk in (1, 64, 100, 2**20):  # 1 is raised to MIN_CHUNK; 2**20: one chunk
        config = TransferConfig(aggregation=aggregation, chunk_size=chunk, topk=3, max_reference_pixels=50)
        results.append(
            transfer_labels(query, ref, labels, config, _head(), generator=torch.Generator().manual_seed(0))
        )
    for other in results[1:]:
        assert torch.equal(other.scores, results[0].scores)
        assert torch.equal(other.labels, results[0].labels)


def test_reference_pixels_and_transfer_from_frames():
    gen = torch.Generator().manual_seed(0)
    ref_frames = torch.randn(2, 4, 5, 6, generator=gen)
    labels = np.full((2, 5, 6), -1)
    labels[0, 0, :3] = 0
    labels[1, 4, 2:] = 1
    emb, lab = reference_pixels(ref_frames, labels)
    assert emb.shape == (7, 4) and lab.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(emb[3], ref_frames[1, :, 4, 2])
    result = transfer_from_frames(ref_frames, ref_frames, labels, TransferConfig(aggregation="topk", topk=1))
    # A labelled pixel's best match is itself (for embeddings this spread out, with the identity head).
    assert result.labels[0, 0, :3].tolist() == [0, 0, 0]
    assert result.labels.shape == (2, 5, 6)


def test_errors():
    query = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="at least one"):
        transfer_labels(query, torch.randn(4, 2), torch.full((4,), -1))
    with pytest.raises(ValueError, match="unknown aggregation"):
        transfer_labels(query, torch.randn(4, 2), torch.zeros(4), SimpleNamespace(aggregation="max"))
    with pytest.raises(ValueError, match="aggregation must be one of eq3, topk"):
        TransferConfig(aggregation="max")


@pytest.mark.parametrize(
    "total,size", [(1230, 64), (6420, 1024), (5, 64), (2047, 1024), (2048, 1024), (1230, 1), (100, 1)]
)
def test_query_chunks_cover_disjointly_and_are_never_small(total, size):
    ranges = query_chunks(total, size)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False))  # contiguous, disjoint
    lengths = [stop - start for start, stop in ranges]
    floor = max(size, MIN_CHUNK)  # sizes below MIN_CHUNK are raised to it
    assert len(ranges) == 1 or (min(lengths) >= floor and max(lengths) < 2 * floor)
    assert len(ranges) > 1 or total < 2 * floor
