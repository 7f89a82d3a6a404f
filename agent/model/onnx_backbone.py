"""The frozen backbone through ONNX Runtime: the same features as eager PyTorch, faster on a CPU.

The agent caches every frame's backbone features once per sample (the backbone is frozen there), so the
backbone's forward pass is pure inference, and it is the largest cost of the first two rounds. ONNX
Runtime's CPU kernels run EfficientNet-Lite0's depthwise convolutions much faster than eager PyTorch, with
the same features to 1e-4 (docs/BENCHMARK.md). A graph is exported per input size (a few seconds), before
any sample's clock runs (InteractiveAgent.prepare).
"""

from __future__ import annotations

import io
import logging
import os
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")


class BackboneRuntimeError(RuntimeError):
    """The requested backbone runtime cannot run here."""


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxBackbone:
    """Callable (B, 3, H, W) normalised float32 -> (B, C, H/os, W/os) features, like the backbone in eval
    mode; H, W must be the input size it was exported for."""

    def __init__(self, backbone: nn.Module, input_size: tuple[int, int], threads: int | None = None) -> None:
        import onnxruntime as ort

        self.input_size = tuple(input_size)
        was_training = backbone.training
        backbone.eval()
        # float32, as the runtime is fed: in a caller's torch.set_default_dtype(torch.float64) the export failed
        # ("Input type (double) and bias type (float)") and the agent fell back to PyTorch, with a warning.
        example = torch.zeros(1, 3, *self.input_size, dtype=torch.float32)
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():  # the tracer warns about shape-dependent Python branches
                warnings.simplefilter("ignore")
                torch.onnx.export(backbone, example, buffer, input_names=["images"], output_names=["features"],
                                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                                  opset_version=17, dynamo=False)
        finally:
            backbone.train(was_training)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle runtime threads must not spin: PyTorch and the CRF workers need the cores between frames.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self(example)  # the first run allocates the runtime's buffers: pay it here, not in a timed round

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(f"the ONNX backbone was exported for {self.input_size}, got {tuple(images.shape[-2:])}")
        array = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"images": array})[0])


def build_backbone_runtime(
    backbone: nn.Module, input_size: tuple[int, int], runtime: str, device: torch.device
) -> OnnxBackbone | None:
    """The ONNX Runtime backbone, or None for eager PyTorch.

    auto: ONNX Runtime on CPU when it is installed (eager PyTorch on CUDA, or if the export fails);
    onnxruntime: ONNX Runtime or an error; torch: eager PyTorch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown backbone runtime '{runtime}': use one of {', '.join(RUNTIMES)}")
    if runtime == "torch" or (runtime == "auto" and (device.type != "cpu" or not onnxruntime_available())):
        return None
    if device.type != "cpu":
        raise BackboneRuntimeError(f"backbone runtime 'onnxruntime' runs on the CPU, but the model is on {device}: "
                                   "use --device cpu, or the torch runtime")
    if not onnxruntime_available():
        raise BackboneRuntimeError("backbone runtime 'onnxruntime' asked for but onnxruntime is not installed: "
                                   "pip install onnxruntime, or use the torch runtime")
    try:
        return OnnxBackbone(backbone, input_size)
    except Exception as error:  # an exporter or runtime limitation: eager PyTorch still works
        if runtime == "onnxruntime":
            raise BackboneRuntimeError(f"could not run the backbone in ONNX Runtime ({type(error).__name__}: "
                                       f"{error}); use the torch runtime") from error
        log.warning("ONNX Runtime backbone unavailable (%s: %s); using PyTorch", type(error).__name__, error)
        return None
