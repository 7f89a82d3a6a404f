"""Reading a DAVIS-format root (agent/data/davis.py)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.data.davis import DavisReader
from agent.data.remote_registry import _info, _objects_in_annotations
from agent.tools.video import open_video


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


@pytest.mark.parametrize(("dtype", "image_format"), [(np.uint16, "PNG"), (">u2", "TIFF")])
def test_16_bit_grey_frames_of_a_narrow_range_read_as_a_frame_folders(tiny_synthetic_root: Path, tmp_path: Path,
                                                                      dtype, image_format) -> None:
    """A thermal camera's raw values (7000..8400) in a DAVIS root were read by their top 8 bits, levels 27..32 (a
    textured video's J fell from 0.72 to 0.41 without a word); they are read from the sequence's darkest level to
    its brightest, as agent.segment reads them from a frame folder, by the same mapping."""
    root = Path(shutil.copytree(tiny_synthetic_root, tmp_path / "root"))
    reader = DavisReader(root)
    name = reader.sequences("val")[0]
    grey = reader.load_frames(name).mean(-1)
    raw = np.rint(7000 + grey * (1400 / 255)).astype(np.int32)
    low, high = int(raw.min()), int(raw.max())
    folder = tmp_path / "folder"
    folder.mkdir()
    for path, frame in zip(reader.frame_paths(name), raw, strict=True):
        Image.fromarray(frame.astype(dtype)).save(path, format=image_format)  # 16 bits under the .jpg name
        Image.fromarray(frame.astype(dtype)).save(folder / f"{path.stem}.{image_format.lower()}")
    frames = reader.load_frames(name)
    expected = np.clip(np.rint((raw - low) * (255 / (high - low))), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(frames, np.repeat(expected[..., None], 3, axis=3))
    np.testing.assert_array_equal(np.stack(list(open_video(folder).frames())), frames)
