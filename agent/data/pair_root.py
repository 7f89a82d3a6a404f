"""A DAVIS-format root of two-object videos whose objects differ and touch: each video's object (object 1) with
the next listed video's object (object 2) pasted over it at its own place, the framework's robot drawing the
first scribbles.

    python -m agent.data.pair_root --davis-root ../shared/davis --output data/pairs   # the held-out videos

Twins (`agent.data.twin_root`) are lookalikes side by side; these are the other case position must not spoil:
distinct objects that overlap or touch, as a rider on a horse. Frame by frame, the next video's frame t (its
frames repeated from the start where it is shorter; resized to this video's size) gives its object's pixels
(every object of it, as one) at the same place, over this video's frame and object 1 where they overlap. The
last video's partner is the first. Frames are written as JPEG (quality 90), annotations as palette PNGs;
sequences are named `<video>-pair` and listed as `val`.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .davis import VOID_LABEL, DatasetError, DavisReader
from .robot_root import POSITIONS, root_command, write_root, write_video

SUFFIX = "-pair"


def paste_object(frames: np.ndarray, masks: np.ndarray, other_frames: np.ndarray,
                 other_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, H, W, 3) uint8 and object masks (T, H, W) bool, with another video's frames and object masks
    (T', H', W'): frames with the other object pasted at its own place and labels (T, H, W) uint8: 1 the object
    where the other leaves it visible, 2 the other object (module docstring)."""
    height, width = frames.shape[1:3]
    out, labels = frames.copy(), masks.astype(np.uint8)
    for t in range(len(frames)):
        k = t % len(other_frames)
        pasted = np.asarray(Image.fromarray(other_masks[k].astype(np.uint8) * 255).resize(
            (width, height), Image.NEAREST)) > 127
        image = np.asarray(Image.fromarray(other_frames[k]).resize((width, height), Image.BILINEAR))
        out[t][pasted] = image[pasted]
        labels[t][pasted] = 2
    return out, labels


def write_pair_root(source: str | Path, sequences: list[str] | tuple[str, ...], output: str | Path,
                    positions: tuple[float, ...] = POSITIONS) -> Path:
    """Write the root (see the module docstring); returns its path. Refuses a non-empty `output` and fewer than
    two sequences (a video paired with itself hides its own object)."""
    sequences = list(sequences)
    if len(set(sequences)) < 2:
        raise DatasetError(f"--sequences {','.join(sequences)}: pairs need at least two videos (each video's object "
                           "is pasted over the previous one's)")
    partners = dict(zip(sequences, sequences[1:] + sequences[:1], strict=True))
    return write_root(source, sequences, output, positions, SUFFIX, functools.partial(_write_pair, partners=partners))


def _objects(reader: DavisReader, name: str) -> np.ndarray:
    masks = reader.load_annotations(name)
    return (masks > 0) & (masks != VOID_LABEL)


def _write_pair(reader: DavisReader, source_name: str, sequence: str, output: Path, positions: tuple[float, ...],
                partners: dict[str, str]) -> None:
    other = partners[source_name]
    frames, labels = paste_object(reader.load_frames(source_name), _objects(reader, source_name),
                                  reader.load_frames(other), _objects(reader, other))
    if not (labels == 1).any():
        raise DatasetError(f"{reader.annotations_dir(source_name)}: {other}'s object hides this video's in every frame")
    write_video(reader, output, sequence, frames, labels, positions)


def main(argv: list[str] | None = None) -> int:
    return root_command("python -m agent.data.pair_root", __doc__, write_pair_root, argv)


if __name__ == "__main__":
    sys.exit(main())
