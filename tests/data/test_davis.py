"""Reading a DAVIS-format root (agent/data/davis.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

from agent.data.davis import DavisReader
from agent.data.remote_registry import _info, _objects_in_annotations


def test_reading_a_sequence_closes_every_file(tiny_synthetic_root: Path) -> None:
    """Each image file is closed once read, not left for the collector (which warned of an unclosed file, and a
    long video held every frame's file open until it ran)."""
    reader = DavisReader(tiny_synthetic_root)
    name = reader.sequences("val")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames, masks = reader.load_frames(name), reader.load_annotations(name)
        info = reader.info(name)
        objects = _objects_in_annotations(reader, name)
        remote = _info(reader, name, 1, None)
    assert frames.shape[:3] == masks.shape and info.num_frames == len(frames) == remote.num_frames
    assert objects == info.num_objects >= 1
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
