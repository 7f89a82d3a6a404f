"""Random geometric augmentation (flip, scale, rotation) applied identically to a frame's data and labels.

Works on any (C, h, w) tensor together with an (H, W) label map of another resolution: the transform is
expressed in normalised coordinates, so cached backbone features (H/8) and labels on the embedding grid
(H/2) stay aligned. Fine-tuning and pretraining on cached features both use it; on images it is the usual
image augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    generator: torch.Generator,
    flip: bool = True,
    scale_range: tuple[float, float] = (0.5, 1.5),
    rotation_degrees: float = 30.0,
) -> torch.Tensor:
    """A (2, 3) affine matrix for `affine_grid`: output coordinates -> input coordinates.

    scale > 1 zooms in (objects look bigger); rotation uniformly in +-rotation_degrees; flip with p = 0.5.
    """
    u = torch.rand(3, generator=generator).tolist()
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[0]
    angle = math.radians(rotation_degrees * (2 * u[1] - 1))
    mirror = -1.0 if flip and u[2] < 0.5 else 1.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    return torch.tensor([[cos * mirror, -sin, 0.0], [sin * mirror, cos, 0.0]], dtype=torch.float32)


def warp(data: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp (C, h, w) or (B, C, h, w) with one (2, 3) matrix; outside the frame becomes 0."""
    batched = data.dim() == 4
    x = data if batched else data[None]
    grid = F.affine_grid(theta[None].to(x).expand(len(x), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out if batched else out[0]


def warp_labels(labels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp an (H, W) int label map (-1 unlabeled) with nearest sampling; outside the frame is -1."""
    shifted = (labels + 1).float()[None]  # so that the zero padding means "unlabeled"
    return warp(shifted, theta, mode="nearest")[0].round().long() - 1


def augment(
    data: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    scale_range: tuple[float, float] = (0.5, 1.5),
    rotation_degrees: float = 30.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random transform applied to both `data` (C, h, w) and `labels` (H, W)."""
    theta = random_affine(generator, flip, scale_range, rotation_degrees)
    return warp(data, theta), warp_labels(labels, theta)
