"""Stochastic pooling and the similarity head: inner product -> BatchNorm on the scalar -> (sigmoid).

Pairwise loss (the paper's): binary cross-entropy on "same object?" over every pair of pixels pooled from
a reference frame and a query frame.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Pooled(NamedTuple):
    """Pixels pooled from one frame: flat indices into its (h*w) grid and their class labels."""

    indices: torch.Tensor  # (N,) int64
    classes: torch.Tensor  # (N,) int64


def sample_pixels(
    labels: np.ndarray | torch.Tensor, k: int, generator: torch.Generator | None = None
) -> Pooled:
    """Pick k pixels uniformly at random (without replacement) per class present in `labels`.

    labels: any shape (usually (h, w)), integer; negative values (-1) are unlabeled and never picked.
    A class with fewer than k labelled pixels contributes all of them (no duplicates): its pairs are then
    honest, and label transfer averages per class, so a smaller count does not bias the argmax.
    Classes come out in ascending order; the same generator seed gives the same pixels.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    flat = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).reshape(-1).long()
    flat = flat.cpu()
    indices, classes = [], []
    for cls in torch.unique(flat[flat >= 0]).tolist():
        members = torch.nonzero(flat == cls, as_tuple=False).squeeze(1)
        if len(members) > k:
            members = members[torch.randperm(len(members), generator=generator)[:k]]
        indices.append(members)
        classes.append(torch.full_like(members, cls))
    if not indices:
        empty = torch.zeros(0, dtype=torch.long)
        return Pooled(empty, empty.clone())
    return Pooled(torch.cat(indices), torch.cat(classes))


def gather_embeddings(embeddings: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(d, h, w) embeddings of one frame + flat pixel indices (N,) -> (N, d)."""
    if embeddings.dim() != 3:
        raise ValueError(f"expected one frame's embeddings (d, h, w), got {tuple(embeddings.shape)}")
    return embeddings.flatten(1)[:, indices.to(embeddings.device)].t()


class SimilarityHead(nn.Module):
    """Logit of "same object?" for a pair: BatchNorm1d over the scalar inner products.

    In training mode the BN uses the statistics of the current pairs; `normalize`, used for label
    transfer, always applies the running statistics (an affine map), so results do not depend on how the
    query pixels are chunked.
    """

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1, momentum=momentum)

    def forward(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
        """(N, d), (M, d) -> (N, M) logits (sigmoid gives the probability of the same object)."""
        scores = emb_a @ emb_b.t()
        return self.bn(scores.reshape(-1, 1)).reshape(scores.shape)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode BN as scale * score + shift (scalars)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        return scale.reshape(()), shift.reshape(())

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """Eval-mode BN of raw inner products of any shape."""
        scale, shift = self.affine()
        return scores * scale + shift


def pair_targets(classes_a: torch.Tensor, classes_b: torch.Tensor) -> torch.Tensor:
    """(N,), (M,) -> (N, M) float: 1 where both pixels belong to the same class."""
    return (classes_a[:, None] == classes_b[None, :]).float()


def pairwise_loss(
    emb_a: torch.Tensor, pooled_a: Pooled, emb_b: torch.Tensor, pooled_b: Pooled, head: SimilarityHead
) -> torch.Tensor:
    """Mean BCE over every pair (pooled pixel of frame a, pooled pixel of frame b).

    emb_a, emb_b: (d, h, w) embeddings of the reference and the query frame (same video).
    """
    a = gather_embeddings(emb_a, pooled_a.indices)
    b = gather_embeddings(emb_b, pooled_b.indices)
    return pair_loss(a, pooled_a.classes, b, pooled_b.classes, head)


def pair_loss(a: torch.Tensor, classes_a: torch.Tensor, b: torch.Tensor, classes_b: torch.Tensor,
              head: SimilarityHead) -> torch.Tensor:
    """pairwise_loss on already gathered embeddings (N, d) and (M, d) with their classes."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("pairwise_loss needs at least one pooled pixel in each frame")
    logits = head(a, b)
    targets = pair_targets(classes_a.to(logits.device), classes_b.to(logits.device))
    return F.binary_cross_entropy_with_logits(logits, targets)


def topk_loss(
    query: torch.Tensor, query_classes: torch.Tensor, refs: torch.Tensor, ref_classes: torch.Tensor, k: int,
    head: SimilarityHead, hard_fraction: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of label transfer as the agent does it (transfer.py, topk): each query pixel's score for
    class c is the head's affine map of the mean of its k largest similarities to c's reference pixels, and
    the loss is the softmax cross-entropy of those scores against the query's true class.

    query (N, d) with classes (N,), refs (M, d) with classes (M,). Query pixels of a class without references
    are left out. The head's eval-mode affine (running statistics) is used, so its weight acts as a learnt
    inverse temperature: the one the CRF's softmax over these scores sees. hard_fraction < 1: the mean over
    only that share of the query pixels with the largest loss.
    """
    sims = query @ refs.t()  # (N, M)
    classes = torch.unique(ref_classes)
    scores = torch.stack([
        sims[:, ref_classes == c].topk(min(k, int((ref_classes == c).sum())), dim=1).values.mean(1)
        for c in classes.tolist()
    ], dim=1)  # (N, C')
    keep = torch.isin(query_classes, classes)
    if not keep.any():
        raise ValueError("topk_loss needs query pixels of a class that has reference pixels")
    target = torch.searchsorted(classes, query_classes[keep])
    losses = F.cross_entropy(head.normalize(scores[keep]), target, reduction="none")
    if hard_fraction < 1:
        losses = losses.topk(max(1, math.ceil(hard_fraction * len(losses)))).values
    return losses.mean()
