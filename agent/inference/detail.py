"""Boundary detail: label transfer again, on the decoder's finer native grid, where the coarse labels change.

The transfer grid is the checkpoint's (60x107 for 240x427): a cell is ~8 pixels of a 480p frame, wider than
a dancer's arm. With frames at 1.5x the checkpoint's size the decoder's own grid is finer (90x160): the
coarse grid is a bilinear downsample of it. Transferring every pixel of the fine grid would cost 2.25x;
but only pixels near a boundary of the coarse labels can change their class, so only a band of them
(TransferConfig.detail_band fine cells on each side of a coarse label change) is transferred again, from
the same reference pixels, with the same top-k; the rest keeps the coarse scores, upsampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transfer import ABSENT_SCORE, topk_scores


def boundary_band(labels: torch.Tensor, width: int) -> torch.Tensor:
    """(B, h, w) int labels -> (B, h, w) bool: pixels within `width` cells (a square window) of another label."""
    x = labels[:, None].float()
    size = 2 * width + 1
    high = F.max_pool2d(x, size, stride=1, padding=width)
    low = -F.max_pool2d(-x, size, stride=1, padding=width)
    return (high != low)[:, 0]


@torch.no_grad()
def refine_boundaries(
    query: torch.Tensor,
    coarse_scores: torch.Tensor,
    refs: dict[int, torch.Tensor],
    scale: float,
    shift: float,
    topk: int,
    band: int,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Scores on the fine grid: the coarse ones (B, C, h, w) upsampled to the grid of `query` (B, d, H, W),
    with each pixel of the boundary band transferred again from `refs` ({class: (M, d)}, multiplied by
    sign(scale) so that the top k are the best); the head's affine (scale, shift) as transfer.py applies it."""
    batch, dim, height, width = query.shape
    fine = F.interpolate(coarse_scores, size=(height, width), mode="bilinear", align_corners=False)
    present = torch.tensor([c for c in refs], dtype=torch.int64)
    if len(present) < 2:
        return fine  # one class: nothing to decide
    labels = present[fine[:, present].argmax(1)]
    in_band = boundary_band(labels, band)
    for b in range(batch):
        index = torch.nonzero(in_band[b].reshape(-1)).squeeze(1)
        if len(index) == 0:
            continue
        q = query[b].reshape(dim, -1)[:, index].t().contiguous()
        scores = torch.full((fine.shape[1], len(index)), ABSENT_SCORE)
        topk_scores(q, refs, topk, scale, shift, chunk_size, scores)
        flat = fine[b].reshape(fine.shape[1], -1)
        flat[:, index] = scores.to(flat)
    return fine
