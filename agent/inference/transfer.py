"""Dense label transfer: labelled reference pixels -> per-class scores and labels for every query pixel.

Aggregations (TransferConfig.aggregation):
  eq3   the paper's Eq. 3: pool K reference pixels per class, score of class l = mean over its pooled
        pixels of the BN-ed similarity (= sum / K, same argmax when every class has K samples). The BN in
        eval mode is affine, so the mean equals BN(query . class centroid): one small matmul per chunk.
  topk  mean of the k largest BN-ed similarities per class, over up to `max_reference_pixels` reference
        pixels per class (random subset).
Scores are returned with the labels because the CRF and the least-similar-background step need them.

Cost is query pixels x reference pixels x d (float32 matmul; bf16 is ~10x slower on these AVX2 CPUs).
Transferring on the decoder's H/4 grid (SiameseEmbedder.embedding_size(stride=4)) and upsampling the
scores bilinearly is ~4x cheaper than H/2 and, at the same reference budget, more accurate: the H/2
embeddings are bilinear interpolations of the H/4 ones, so a reference budget covers more of the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TransferConfig
from ..model.similarity import SimilarityHead, sample_pixels

log = logging.getLogger(__name__)

AGGREGATIONS = ("eq3", "topk")
# BLAS (MKL) computes a row's dot products identically for any matrix of >= ~12 rows but not for a handful
# (gemv-like paths), so chunks are at least this tall; that makes chunked results bit-identical.
MIN_CHUNK = 64
# Score of classes without reference pixels: finite (bilinear upsampling of -inf gives NaN where a tap has
# weight 0) yet far below any similarity, so argmax and softmax ignore it.
ABSENT_SCORE = -1e9


@dataclass
class TransferResult:
    scores: torch.Tensor  # (B, C, h, w) float32; ABSENT_SCORE for classes with no reference pixel
    labels: torch.Tensor  # (B, h, w) int64, argmax over C (the class ids 0..C-1)


def reference_pixels(
    embeddings: torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled pixels of one or several frames: (d, h, w) / (R, d, h, w) + (h, w) / (R, h, w) labels,
    -1 = unlabeled -> embeddings (M, d) and labels (M,)."""
    if embeddings.dim() == 3:
        embeddings = embeddings[None]
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    if labels.dim() == 2:
        labels = labels[None]
    if labels.shape != (embeddings.shape[0], *embeddings.shape[2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match embeddings {tuple(embeddings.shape)}")
    flat_emb = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
    flat_lab = labels.reshape(-1).to(embeddings.device)
    keep = flat_lab >= 0
    return flat_emb[keep], flat_lab[keep]


def head_affine(head: SimilarityHead | None, device: torch.device) -> tuple[float, float]:
    if head is None:  # raw inner products (e.g. measuring backbone features directly)
        return 1.0, 0.0
    scale, shift = head.affine()
    return float(scale.detach().to(device)), float(shift.detach().to(device))


def _class_subsets(
    ref_labels: torch.Tensor, limit: int, generator: torch.Generator | None
) -> dict[int, torch.Tensor]:
    """Indices of up to `limit` random reference pixels per class."""
    pooled = sample_pixels(ref_labels, limit, generator)
    return {c: pooled.indices[pooled.classes == c] for c in torch.unique(pooled.classes).tolist()}


def topk_scores(
    query: torch.Tensor, refs: dict[int, torch.Tensor], topk: int, scale: float, shift: float, chunk_size: int,
    out: torch.Tensor,
) -> None:
    """out[c, i] (C, n) = the head's affine of the mean of query row i's `topk` best similarities to refs[c]
    ({class: (M_c, d)}, multiplied by sign(scale) so that the top k are the best); query: (n, d)."""
    sign = 1.0 if scale >= 0 else -1.0
    for start, stop in query_chunks(len(query), chunk_size):
        for c, r in refs.items():
            sims = query[start:stop] @ r.t()  # (n, M_c): n < 2 x chunk_size
            best = sims.topk(min(topk, sims.shape[1]), dim=1).values.mean(1) * sign
            out[c, start:stop] = (best * scale + shift).float()


def query_chunks(total: int, size: int) -> list[tuple[int, int]]:
    """Disjoint [start, stop) ranges covering `total` rows, as equal as possible and each at least
    max(size, MIN_CHUNK) rows (one range when total is smaller): a small remainder chunk would both waste
    a BLAS call and fall on the few-row path whose results differ in the last bit."""
    parts = max(1, total // max(MIN_CHUNK, size))
    bounds = np.linspace(0, total, parts + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


@torch.no_grad()
def transfer_labels(
    query: torch.Tensor,
    ref_embeddings: torch.Tensor,
    ref_labels: torch.Tensor | np.ndarray,
    config: TransferConfig | None = None,
    head: SimilarityHead | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> TransferResult:
    """Transfer labels to every pixel of `query` (B, d, h, w) from reference pixels (M, d) with labels (M,).

    Reference labels are class ids 0..C-1 (negative = ignored); C = num_classes or max label + 1. Classes
    without reference pixels score ABSENT_SCORE. `head` supplies the BN (running statistics); None = identity.
    """
    config = config or TransferConfig()
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(
            f"unknown aggregation '{config.aggregation}': choose one of {', '.join(AGGREGATIONS)}"
        )
    if query.dim() != 4:
        raise ValueError(f"query must be (B, d, h, w), got {tuple(query.shape)}")
    ref_labels = torch.as_tensor(ref_labels).to(ref_embeddings.device).long()
    valid = ref_labels >= 0
    ref_embeddings, ref_labels = ref_embeddings[valid], ref_labels[valid]
    if len(ref_labels) == 0:
        raise ValueError("label transfer needs at least one labelled reference pixel")
    num_classes = num_classes or int(ref_labels.max()) + 1
    if int(ref_labels.max()) >= num_classes:
        raise ValueError(f"reference label {int(ref_labels.max())} >= num_classes {num_classes}")

    batch, dim, height, width = query.shape
    device = query.device
    scale, shift = head_affine(head, device)
    ref_embeddings = ref_embeddings.to(device=device, dtype=query.dtype)
    limit = config.samples_per_class if config.aggregation == "eq3" else config.max_reference_pixels
    subsets = _class_subsets(ref_labels.cpu(), limit, generator)
    classes = sorted(subsets)
    scores = torch.full(
        (batch, num_classes, height * width), ABSENT_SCORE, dtype=torch.float32, device=device
    )

    if config.aggregation == "eq3":
        # mean_j BN(q.r_j) = BN(q . mean_j r_j): per-class centroids of the pooled pixels.
        centroids = torch.stack([ref_embeddings[subsets[c].to(device)].mean(0) for c in classes])  # (C', d)
        for b in range(batch):
            q = query[b].reshape(dim, -1).t().contiguous()  # (h*w, d): row layout keeps results chunk-exact
            for start, stop in query_chunks(height * width, config.chunk_size):
                raw = q[start:stop] @ centroids.t()  # (n, C')
                scores[b, classes, start:stop] = (raw * scale + shift).float().t()
    else:
        # Top-k of BN-ed similarities: with a negative BN scale the order flips, so take the bottom k.
        sign = 1.0 if scale >= 0 else -1.0
        refs = {c: ref_embeddings[subsets[c].to(device)] * sign for c in classes}  # (M_c, d)
        for b in range(batch):
            q = query[b].reshape(dim, -1).t().contiguous()
            topk_scores(q, refs, config.topk, scale, shift, config.chunk_size, scores[b])

    scores = scores.reshape(batch, num_classes, height, width)
    return TransferResult(scores=scores, labels=scores.argmax(1))


def transfer_from_frames(
    query: torch.Tensor,
    ref_embeddings: torch.Tensor,
    ref_labels: np.ndarray | torch.Tensor,
    config: TransferConfig | None = None,
    head: SimilarityHead | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> TransferResult:
    """Like transfer_labels, with reference frames' embeddings (R, d, h, w) and label maps (R, h, w)."""
    emb, lab = reference_pixels(ref_embeddings, ref_labels)
    return transfer_labels(query, emb, lab, config, head, num_classes, generator)
