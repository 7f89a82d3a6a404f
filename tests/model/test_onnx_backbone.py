"""The frozen backbone through ONNX Runtime gives the features eager PyTorch gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.model import build_backbone, onnx_backbone
from agent.model.onnx_backbone import BackboneRuntimeError, build_backbone_runtime

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["tiny", "efficientnet-lite0"])
def test_onnx_features_equal_eager_features(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, pretrained="none").eval()
    runtime = build_backbone_runtime(backbone, (64, 96), "onnxruntime", CPU)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = backbone(images)
    got = runtime(images)
    assert got.shape == expected.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)
    assert not backbone.training  # the export leaves the module as it was


def test_extract_features_uses_the_given_runtime():
    from agent.config import ModelConfig
    from agent.model import build_model

    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=8, input_size=(64, 96)))
    runtime = build_backbone_runtime(model.backbone, (64, 96), "onnxruntime", CPU)
    images = torch.randn(3, 3, 64, 96)
    np.testing.assert_allclose(model.extract_features(images, backbone=runtime).numpy(),
                               model.extract_features(images).numpy(), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="exported for"):
        runtime(torch.randn(1, 3, 32, 48))


def test_runtime_choice(monkeypatch):
    backbone = build_backbone("tiny", pretrained="none")
    assert build_backbone_runtime(backbone, (64, 96), "torch", CPU) is None
    assert build_backbone_runtime(backbone, (64, 96), "auto", torch.device("cuda")) is None  # no export on CUDA
    assert build_backbone_runtime(backbone, (64, 96), "auto", CPU) is not None
    with pytest.raises(BackboneRuntimeError, match="runs on the CPU"):
        build_backbone_runtime(backbone, (64, 96), "onnxruntime", torch.device("cuda"))
    with pytest.raises(ValueError, match="unknown backbone runtime 'tvm'"):
        build_backbone_runtime(backbone, (64, 96), "tvm", CPU)
    monkeypatch.setattr(onnx_backbone, "onnxruntime_available", lambda: False)
    assert build_backbone_runtime(backbone, (64, 96), "auto", CPU) is None  # falls back to PyTorch
    with pytest.raises(BackboneRuntimeError, match="pip install onnxruntime"):
        build_backbone_runtime(backbone, (64, 96), "onnxruntime", CPU)
