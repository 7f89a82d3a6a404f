"""A DAVIS-format root of two-object videos made from one-object ones: each video's object (object 1) and a
mirrored copy of it pasted beside it (object 2), with the framework's robot drawing the first scribbles.

    python -m agent.data.twin_root --davis-root ../shared/davis --output data/twins   # the held-out videos

The DAVIS-2017 val videos we do not have are mostly several objects, often alike (dancers, a herd, fish),
while ../shared/davis holds one object per video (multi-object training videos as a union mask). Twins are
the hard case of that: two objects that appearance alone cannot tell apart. Frame by frame, the object's
pixels (every object of the source, as one) are mirrored left to right within their bounding box and pasted
at the median object width plus 16 pixels to the side with more room, over the frame and over object 1
where they overlap; the copy is clipped at the frame's border. Frames are written as JPEG (quality 90),
annotations as palette PNGs; sequences are named `<video>-twins` and listed as `val`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from .davis import VOID_LABEL, DatasetError, DavisReader
from .robot_root import POSITIONS, root_command, write_root, write_video

log = logging.getLogger(__name__)

SUFFIX = "-twins"
GAP = 16  # pixels between the object and its copy, at the object's median width


def twin_video(frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, H, W, 3) uint8 and object masks (T, H, W) bool -> frames with the mirrored copy pasted and
    labels (T, H, W) uint8: 1 the object where the copy leaves it visible, 2 the copy (module docstring)."""
    num_frames, _, width = masks.shape
    columns = [np.nonzero(m.any(0))[0] for m in masks]
    spans = [(c[0], c[-1]) for c in columns if len(c)]
    if not spans:
        raise DatasetError("no frame shows the object")
    shift = int(np.median([right - left + 1 for left, right in spans])) + GAP
    if np.mean([(left + right) / 2 for left, right in spans]) > width / 2:
        shift = -shift  # towards the side with more room
    out = frames.copy()
    labels = masks.astype(np.uint8)
    for t in range(num_frames):
        if not len(columns[t]):
            continue
        left, right = columns[t][0], columns[t][-1]
        mirrored_mask = masks[t, :, left:right + 1][:, ::-1]
        mirrored = frames[t, :, left:right + 1][:, ::-1]
        target = np.arange(left, right + 1) + shift
        inside = (target >= 0) & (target < width)
        rows, cols = np.nonzero(mirrored_mask[:, inside])
        out[t, rows, target[inside][cols]] = mirrored[:, inside][rows, cols]
        labels[t, rows, target[inside][cols]] = 2
    return out, labels


def write_twin_root(source: str | Path, sequences: list[str] | tuple[str, ...], output: str | Path,
                    positions: tuple[float, ...] = POSITIONS) -> Path:
    """Write the root (see the module docstring); returns its path. Refuses a non-empty `output`."""
    return write_root(source, sequences, output, positions, SUFFIX, _write_twins)


def _write_twins(reader: DavisReader, source_name: str, sequence: str, output: Path,
                 positions: tuple[float, ...]) -> None:
    masks = reader.load_annotations(source_name)
    try:
        frames, labels = twin_video(reader.load_frames(source_name), (masks > 0) & (masks != VOID_LABEL))
    except DatasetError as error:
        raise DatasetError(f"{reader.annotations_dir(source_name)}: {error}") from error
    write_video(reader, output, sequence, frames, labels, positions)


def main(argv: list[str] | None = None) -> int:
    return root_command("python -m agent.data.twin_root", __doc__, write_twin_root, argv)


if __name__ == "__main__":
    sys.exit(main())
