"""The top-k transfer loss and the sparse decode that training uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agent.config import ModelConfig
from agent.model.siamese import build_model
from agent.model.similarity import SimilarityHead, topk_loss


@pytest.mark.parametrize("hidden", [0, 12])
@pytest.mark.parametrize("size", [(24, 40), (36, 60), (20, 33)])
def test_decode_points_equals_the_dense_decode(size, hidden):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=16, input_size=(48, 80),
                                    decoder_hidden=hidden)).eval()
    features = torch.randn(2, model.backbone.out_channels, 9, 15)
    dense = model.decode(features, size)
    indices = [torch.randperm(size[0] * size[1])[:40] for _ in range(2)]
    points = model.decode_points(features, size, indices)
    for b in range(2):
        assert torch.allclose(points[b], dense[b].flatten(1)[:, indices[b]].t(), atol=1e-5)


def test_topk_loss_is_the_cross_entropy_of_the_transfer_scores():
    torch.manual_seed(0)
    head = SimilarityHead()
    head.bn.weight.data.fill_(5.0)
    refs = F.normalize(torch.randn(30, 8), dim=1)
    ref_classes = torch.tensor([0] * 20 + [2] * 10)
    query = F.normalize(torch.randn(6, 8), dim=1)
    query_classes = torch.tensor([0, 2, 2, 0, 1, 2])  # class 1 has no references: left out
    loss = topk_loss(query, query_classes, refs, ref_classes, 3, head)
    sims = query @ refs.t()
    scores = torch.stack([sims[:, :20].topk(3, 1).values.mean(1), sims[:, 20:].topk(3, 1).values.mean(1)], 1)
    keep = query_classes != 1
    expected = F.cross_entropy(5.0 / (1 + 1e-5) ** 0.5 * scores[keep], torch.tensor([0, 1, 1, 0, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_topk_loss_rewards_embeddings_that_transfer():
    head = SimilarityHead()
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    classes = torch.tensor([0, 1])
    right = topk_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), refs, classes, 1, head)
    wrong = topk_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), refs, classes, 1, head)
    assert right < wrong
    with pytest.raises(ValueError, match="shares|a class that has reference"):
        topk_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([5]), refs, classes, 1, head)


def test_topk_loss_hard_fraction_averages_the_hardest_query_pixels():
    torch.manual_seed(0)
    head = SimilarityHead()
    refs = F.normalize(torch.randn(40, 8), dim=1)
    ref_classes = torch.tensor([0] * 20 + [1] * 20)
    query = F.normalize(torch.randn(10, 8), dim=1)
    query_classes = torch.tensor([0, 1] * 5)
    sims = query @ refs.t()
    scores = torch.stack([sims[:, :20].topk(3, 1).values.mean(1), sims[:, 20:].topk(3, 1).values.mean(1)], 1)
    per_pixel = F.cross_entropy(head.normalize(scores), query_classes, reduction="none")
    hardest = per_pixel.sort(descending=True).values
    assert topk_loss(query, query_classes, refs, ref_classes, 3, head, hard_fraction=0.3).item() == pytest.approx(
        hardest[:3].mean().item(), rel=1e-5)
    assert topk_loss(query, query_classes, refs, ref_classes, 3, head, hard_fraction=1.0).item() == pytest.approx(
        per_pixel.mean().item(), rel=1e-5)
    assert topk_loss(query, query_classes, refs, ref_classes, 3, head, hard_fraction=0.01).item() == pytest.approx(
        hardest[0].item(), rel=1e-5)
