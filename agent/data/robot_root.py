"""A DAVIS-format root whose first scribbles are drawn by the framework's robot, for any videos with ground
truth: how held-out training videos become a validation set without human scribbles.

    python -m agent.data.robot_root --davis-root ../shared/davis --output data/holdout   # the default split

Frames and annotations are symbolic links to the source root (nothing is copied); each sequence gets one
robot scribble per position in `positions` (the robot on an empty prediction, on the frame nearest to that
position of the video where the object is well visible) and the sequences are listed as `val`, named
`<video>-heldout`: a new name, so the framework reads their metadata from the files (an official name would
bring DAVIS-2017's object count, which differs for the union masks of ../shared/davis).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..config import HOLDOUT
from ..paths import file_in_the_way
from .davis import VOID_LABEL, DatasetError, DavisReader
from .synthetic import initial_scribble

log = logging.getLogger(__name__)

SUFFIX = "-heldout"
# Two first scribbles per video, early and late, like the human ones spread over the video.
POSITIONS = (0.25, 0.75)


def write_robot_root(source: str | Path, sequences: list[str] | tuple[str, ...], output: str | Path,
                     positions: tuple[float, ...] = POSITIONS) -> Path:
    """Write the root (see the module docstring); returns its path. Refuses a non-empty `output`."""
    reader = DavisReader(source)
    output = Path(output)
    if not sequences:
        raise DatasetError("--sequences names no sequence")
    odd = [s for s in sequences if Path(s).name != s or s in (".", "..")]
    if odd:
        raise DatasetError(f"sequence name {odd[0]!r}: a folder name of the root, without a path")
    twice = sorted({s for s in sequences if list(sequences).count(s) > 1})
    if twice:
        raise DatasetError(f"--sequences names {', '.join(twice)} more than once")
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output} is a file: --output must be a folder")
    blocker = file_in_the_way(output.parent)
    if blocker is not None:
        raise DatasetError(f"{blocker} is a file: --output {output} cannot be made below it")
    if output.exists() and any(output.iterdir()):
        raise DatasetError(f"{output} is not empty: remove it or choose another --output")
    missing = [s for s in sequences if not reader.has_sequence(s)]
    if missing:
        raise DatasetError(f"{reader.root} has no sequence(s) {', '.join(missing)}")
    for source_name in sequences:
        sequence = source_name + SUFFIX
        masks = reader.load_annotations(source_name)
        num_objects = int(masks[masks != VOID_LABEL].max())
        for kind, source_dir in (("JPEGImages", reader.frames_dir(source_name)),
                                 ("Annotations", reader.annotations_dir(source_name))):
            link = output / kind / reader.resolution / sequence
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source_dir.resolve(), link, target_is_directory=True)
        scribble_dir = output / "Scribbles" / sequence
        scribble_dir.mkdir(parents=True)
        for index, position in enumerate(positions, start=1):
            scribble = initial_scribble(sequence, masks, num_objects, near=position)
            if scribble is None:
                raise DatasetError(f"{sequence}: the robot drew no stroke for every object near {position:.2f}")
            (scribble_dir / f"{index:03d}.json").write_text(json.dumps(scribble))
            frame = next(f for f, strokes in enumerate(scribble["scribbles"]) if strokes)
            log.info("%s: scribble %d on frame %d of %d", sequence, index, frame, len(masks))
    listing = output / "ImageSets" / "2017" / "val.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{s}{SUFFIX}\n" for s in sequences))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.data.robot_root", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis-root", type=Path, required=True, help="source DAVIS-format root")
    parser.add_argument("--sequences", default=",".join(HOLDOUT),
                        help="comma-separated (default: the held-out training videos, TrainConfig.holdout)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        root = write_robot_root(args.davis_root, [s.strip() for s in args.sequences.split(",") if s.strip()],
                                args.output)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {root}: python session_runner.py --davis-root {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
