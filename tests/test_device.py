"""agent.device: --device names, checked before the model is built."""

from __future__ import annotations

import pytest
import torch

from agent.device import resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA devices, as torch reports it (no GPU is used)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_a_cuda_index_past_the_machines_devices_is_one_error(two_gpus):
    # It passed, and moving the model there failed ("invalid device ordinal"): a traceback after the preflight.
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["cudafoo", "cuda:-1", "cuda:x"])
def test_a_device_torch_cannot_parse_is_one_error(two_gpus, name):
    with pytest.raises(ValueError, match=f"unknown device '{name}': use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_torch_device_is_taken_and_a_device_that_is_not_text_is_a_type_error(two_gpus):
    # The Python API's device=torch.device("cpu") was "'torch.device' object has no attribute 'startswith'".
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="this machine has 2 CUDA device"):
        resolve_device(torch.device("cuda", 2))
    with pytest.raises(TypeError, match="device must be auto, cpu, cuda, cuda:N or a torch.device, got int"):
        resolve_device(0)
