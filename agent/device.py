"""--device auto|cpu|cuda -> torch.device, with a clear error when CUDA is asked for but absent."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    # The Python API's `device=`: a torch.device is one (it was "'torch.device' object has no attribute
    # 'startswith'"), anything else but text a TypeError.
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be auto, cpu, cuda, cuda:N or a torch.device, got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device '{name}': use auto, cpu or cuda")
    try:
        device = torch.device(name)
    except RuntimeError as error:  # cudafoo, cuda:-1
        raise ValueError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from error
    # An index past the machine's devices passed here and failed when the model moved there ("invalid device
    # ordinal", a traceback once the files were checked).
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device
