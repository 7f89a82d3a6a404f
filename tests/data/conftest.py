"""Fixtures shared by the root writers' tests (robot, twin and pair roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.data.synthetic import SyntheticSpec, write_dataset


@pytest.fixture(scope="session")
def one_object_root(tmp_path_factory) -> Path:
    """Two short one-object synthetic videos, synth-000 and synth-001, listed as train."""
    root = tmp_path_factory.mktemp("one")
    write_dataset(root, SyntheticSpec(num_sequences=2, num_frames=6, height=96, width=200, max_objects=1,
                                      subset="train", seed=7))
    return root
