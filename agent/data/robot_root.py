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
import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from ..config import HOLDOUT, ConfigError, comma_names
from ..errors import CommandParser, ascii_float, repeated
from ..paths import file_in_the_way, path_arg
from ..signals import exit_code, signal_name, terminate_as_interrupt
from .davis import VOID_LABEL, DatasetError, DavisReader
from .synthetic import initial_scribble, write_frames
from .validation import validate_sequence

log = logging.getLogger(__name__)

SUFFIX = "-heldout"
# Two first scribbles per video, early and late, like the human ones spread over the video.
POSITIONS = (0.25, 0.75)


def write_robot_root(source: str | Path, sequences: list[str] | tuple[str, ...], output: str | Path,
                     positions: tuple[float, ...] = POSITIONS) -> Path:
    """Write the root (see the module docstring); returns its path. Refuses a non-empty `output`."""
    return write_root(source, sequences, output, positions, SUFFIX, _link_sequence)


def write_root(source: str | Path, sequences: list[str] | tuple[str, ...], output: str | Path,
               positions: tuple[float, ...], suffix: str, write_sequence) -> Path:
    """A new root at `output` (refused if not empty, removed again if writing fails) with, for each source
    sequence, write_sequence(reader, source name, new name = name + suffix, output, positions), listed as val."""
    reader = DavisReader(source)
    output = Path(output)
    check_new_root(reader, sequences, output)
    with removed_on_failure(output):
        for source_name in sequences:
            write_sequence(reader, source_name, source_name + suffix, output, positions)
        write_listing(output, [s + suffix for s in sequences])
    return output


def _link_sequence(reader: DavisReader, source_name: str, sequence: str, output: Path,
                   positions: tuple[float, ...]) -> None:
    masks = reader.load_annotations(source_name)
    num_objects = int(masks[masks != VOID_LABEL].max())
    for kind, source_dir in (("JPEGImages", reader.frames_dir(source_name)),
                             ("Annotations", reader.annotations_dir(source_name))):
        link = output / kind / reader.resolution / sequence
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source_dir.resolve(), link, target_is_directory=True)
    write_first_scribbles(output, sequence, masks, num_objects, positions)


@contextlib.contextmanager
def removed_on_failure(output: Path):
    """Remove what was written below `output` (new or empty before) when the block fails: a half-written root
    would pass for a finished one, and block a second try as "not empty"."""
    made = not output.exists()
    try:
        yield
    except BaseException:
        if made:
            shutil.rmtree(output, ignore_errors=True)
        elif output.is_dir():
            for path in output.iterdir():  # rmtree removes links, never what they point to
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def check_new_root(reader: DavisReader, sequences: list[str] | tuple[str, ...], output: Path) -> None:
    """Raise DatasetError unless `sequences` are distinct names of `reader`'s root, every frame and annotation
    of theirs reads (data/validation.py), and `output` is a new or empty folder that can be made."""
    if not sequences:
        raise DatasetError("--sequences names no sequence")
    odd = [s for s in sequences if Path(s).name != s or s in (".", "..")]
    if odd:
        raise DatasetError(f"sequence name {odd[0]!r}: a folder name of the root, without a path")
    twice = sorted(repeated(sequences))
    if twice:
        raise DatasetError(f"--sequences names {', '.join(twice)} more than once")
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output} is a file: --output must be a folder")
    blocker = file_in_the_way(output.parent)
    if blocker is not None:
        raise DatasetError(f"{blocker} is a file: --output {output} cannot be made below it")
    source, target = reader.root.resolve(), output.resolve()
    if target == source or target in source.parents:  # it was "is not empty: remove it", of the dataset itself
        what = "is the --davis-root it reads" if target == source else f"holds the --davis-root {reader.root}"
        raise DatasetError(f"--output {output} {what}: choose another --output (a new or empty folder)")
    if output.exists() and any(output.iterdir()):
        raise DatasetError(f"{output} is not empty: remove it or choose another --output")
    missing = [s for s in sequences if not reader.has_sequence(s)]
    if missing:
        raise DatasetError(f"{reader.root} has no sequence(s) {', '.join(missing)}")
    for sequence in sequences:  # before anything is written
        validate_sequence(reader, sequence, scribbles=False)


def write_video(reader: DavisReader, output: Path, sequence: str, frames, labels, positions: tuple[float, ...]) -> None:
    """A new video of the root at `output` (twin_root's, pair_root's): its frames as JPEG (quality 90), its labels
    (T, H, W) as palette PNGs and the robot's first scribble near each position."""
    write_frames(output / "JPEGImages" / reader.resolution / sequence,
                 output / "Annotations" / reader.resolution / sequence, frames, labels, quality=90)
    write_first_scribbles(output, sequence, labels, int(labels.max()), positions)


def write_first_scribbles(output: Path, sequence: str, masks, num_objects: int,
                          positions: tuple[float, ...] = POSITIONS) -> None:
    """Scribbles/<sequence>/001.json, 002.json, ...: the robot's first scribble near each position."""
    scribble_dir = output / "Scribbles" / sequence
    scribble_dir.mkdir(parents=True)
    written: dict[float, dict] = {}
    for position in positions:
        scribble = initial_scribble(sequence, masks, num_objects, near=position)
        if scribble is None:
            raise DatasetError(f"{sequence}: the robot drew no stroke for every object near {position:.2f}")
        frame = next(f for f, strokes in enumerate(scribble["scribbles"]) if strokes)
        same = next((p for p, earlier in written.items() if earlier == scribble), None)
        if same is not None:  # every object shows well on one frame only: one sample would be counted twice
            log.warning("%s: near %.2f the robot draws on frame %d again, as near %.2f: that scribble is written once",
                        sequence, position, frame, same)
            continue
        written[position] = scribble
        (scribble_dir / f"{len(written):03d}.json").write_text(json.dumps(scribble))
        log.info("%s: scribble %d on frame %d of %d", sequence, len(written), frame, len(masks))


def parse_positions(text: str | None) -> tuple[float, ...]:
    """--positions: comma-separated positions in the video, each in [0, 1] (None: POSITIONS); a ConfigError naming
    the flag otherwise. An empty item (`0.25,`, an unset variable) is config.comma_names' error: it was dropped."""
    if text is None:
        return POSITIONS
    items = comma_names(text, "--positions")
    try:
        values = tuple(ascii_float(v) for v in items)
    except ValueError:
        values = ()
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"--positions {text!r}: comma-separated numbers in [0, 1], e.g. 0.25,0.75")
    twice = repeated(values)
    if twice:  # the robot draws the same scribble twice: one sample counted twice
        raise ConfigError(f"--positions {text!r}: position {twice[0]:g} given more than once (each would be the same "
                          "first scribble, one sample counted twice)")
    return values


def write_listing(output: Path, names: list[str]) -> None:
    """ImageSets/2017/val.txt listing `names`."""
    listing = output / "ImageSets" / "2017" / "val.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{name}\n" for name in names))


def root_command(prog: str, description: str, write, argv: list[str] | None = None) -> int:
    """The command line of a root writer (this module's, twin_root's): write(source, sequences, output,
    positions) -> the root's path; a DatasetError or OSError is one `error:` line and exit code 2, a stop signal
    one `interrupted` line and 128 + the signal."""
    parser = CommandParser(prog=prog, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis-root", type=path_arg, required=True, help="source DAVIS-format root")
    parser.add_argument("--sequences", default=",".join(HOLDOUT),
                        help="comma-separated (default: the held-out training videos, TrainConfig.holdout)")
    parser.add_argument("--output", type=path_arg, required=True)
    parser.add_argument("--positions", default=None,
                        help="one first scribble near each of these positions in the video (default 0.25,0.75)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        with terminate_as_interrupt():  # SIGTERM killed it mid-way: a half-written root read as a finished one
            root = write(args.davis_root, comma_names(args.sequences, "--sequences"), args.output,
                         parse_positions(args.positions))
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP: what was written is removed
        print(f"interrupted ({signal_name(interrupt)}): nothing written", file=sys.stderr)
        return exit_code(interrupt)
    except (DatasetError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a name too long, a full disk: what was written is removed
        print(f"error: {error.filename or args.output}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"wrote {root}: python session_runner.py --davis-root {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return root_command("python -m agent.data.robot_root", __doc__, write_robot_root, argv)


if __name__ == "__main__":
    sys.exit(main())
