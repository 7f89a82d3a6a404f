"""Shared fixtures: a tiny synthetic DAVIS-format dataset and the real one when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent.config import ModelConfig

# The one tiny model of the suite: three strided convs with random weights, 48x80 input, 16-d embeddings.
TINY_MODEL = ModelConfig(backbone="tiny", pretrained="none", input_size=(48, 80), embedding_dim=16)

REPO = Path(__file__).resolve().parents[1]
SHARED_DAVIS = REPO.parent / "shared" / "davis"


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory) -> Path:
    """Three short, small sequences with 1, 2 and 3 objects (val subset)."""
    from agent.data.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, SyntheticSpec(num_sequences=3, num_frames=6, height=96, width=160, seed=3))
    return root


@pytest.fixture(scope="session")
def shared_davis() -> Path:
    if not (SHARED_DAVIS / "JPEGImages").is_dir():
        pytest.skip("real DAVIS not found at ../shared/davis")
    return SHARED_DAVIS


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and they thrash on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model():
    """A fresh tiny model (seeded): tests may train it."""
    from agent.model.siamese import build_model

    torch.manual_seed(0)
    return build_model(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny model (seed 0) saved as a checkpoint, once per test session."""
    from agent.model.checkpoint import save_checkpoint
    from agent.model.siamese import build_model

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt", build_model(TINY_MODEL),
                           extra={"iterations": 0})


def bare_flags(help_text: str) -> list[str]:
    """The options of an argparse --help text that have no help of their own (no default, no choices shown)."""
    lines = help_text.split("\noptions:\n")[1].split("\n\n")[0].splitlines()
    return [line.split()[0] for index, line in enumerate(lines)
            if line.startswith("  -") and "  " not in line.strip()
            and not (index + 1 < len(lines) and lines[index + 1].startswith(" " * 8))]


def run_command(argv: list[str], monkeypatch) -> int:
    """A command as the shell runs it (`["-m", "agent.report", ...]` or `["session_runner.py", ...]`), in this
    process; its exit code (it must exit: every test of it expects a SystemExit)."""
    import runpy
    import sys

    module, *args = argv[1:] if argv[0] == "-m" else argv
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as exit_info:
        if argv[0] == "-m":
            runpy.run_module(module, run_name="__main__")
        else:
            runpy.run_path(str(REPO / module), run_name="__main__")
    return exit_info.value.code
