"""Boundary detail: the band where coarse labels change is transferred again on the finer grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agent.config import TransferConfig
from agent.inference.detail import boundary_band, refine_boundaries
from agent.inference.transfer import transfer_labels


def test_boundary_band_marks_pixels_near_a_label_change():
    labels = torch.zeros(1, 8, 10, dtype=torch.int64)
    labels[0, :, 6:] = 1
    band = boundary_band(labels, 1)[0]
    assert band[:, 5:7].all() and not band[:, :5].any() and not band[:, 7:].any()
    assert not boundary_band(torch.zeros(1, 4, 4, dtype=torch.int64), 2).any()


def test_refined_band_equals_a_full_transfer_on_the_fine_grid():
    torch.manual_seed(0)
    query = F.normalize(torch.randn(2, 8, 12, 20), dim=1)
    refs = F.normalize(torch.randn(60, 8), dim=1)
    ref_labels = torch.tensor([0] * 30 + [1] * 30)
    config = TransferConfig(topk=5, max_reference_pixels=100)
    full = transfer_labels(query, refs, ref_labels, config, num_classes=2).scores  # the identity head
    coarse = transfer_labels(F.interpolate(query, size=(6, 10), mode="bilinear", align_corners=False), refs,
                             ref_labels, config, num_classes=2).scores
    fine = refine_boundaries(query, coarse, {0: refs[:30], 1: refs[30:]}, 1.0, 0.0, topk=5, band=2)
    upsampled = F.interpolate(coarse, size=(12, 20), mode="bilinear", align_corners=False)
    band = boundary_band(upsampled.argmax(1), 2)
    assert band.any() and not band.all()
    assert torch.allclose(fine.permute(0, 2, 3, 1)[band], full.permute(0, 2, 3, 1)[band], atol=1e-6)
    assert torch.equal(fine.permute(0, 2, 3, 1)[~band], upsampled.permute(0, 2, 3, 1)[~band])
