"""What the study commands (crf_study.py, finetune_study.py) check before the first video plays, and how they
end on bad input: one `error:` line, exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError
from ..data.davis import DatasetError, DavisReader, SequenceInfo
from ..paths import file_in_the_way
from .outputs import OutputDirError


def int_list(text: str, name: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4], each >= 1; a ConfigError naming the flag otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{name} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} {text!r}: expected integers >= 1")
    return values


def check_output_file(output: Path, overwrite: bool, results: str) -> None:
    """--output must be a file that can be written and, unless `overwrite`, does not exist yet (`results`:
    whose results an existing one would hold, for the message)."""
    if output.is_dir():
        raise OutputDirError(f"{output}: is a directory, --output is the CSV file to write")
    if output.exists() and not overwrite:
        raise OutputDirError(f"{output}: exists (an earlier {results}?): pass --overwrite or another --output")
    blocker = file_in_the_way(output.parent)
    if blocker is not None:
        raise OutputDirError(f"{blocker}: is a file, --output {output} cannot be written below it")


def study_videos(davis_root: Path, subset: str, sequences: str | None,
                 scribbles: list[int]) -> tuple[DavisReader, list[SequenceInfo]]:
    """The chosen videos of a root, registered and every file checked as a session does (partial roots
    allowed), each with the scribble files asked for."""
    from ..data.registry import register_dataset

    wanted = None if sequences is None else [s.strip() for s in sequences.split(",") if s.strip()]
    registration = register_dataset(davis_root, subset, wanted)
    reader = DavisReader(registration.root)
    infos = [registration.infos[name] for name in registration.sequences]
    for info in infos:
        if max(scribbles) > info.num_scribbles:
            raise DatasetError(f"{reader.scribbles_dir(info.name)}: has {info.num_scribbles} scribble file(s), "
                               f"--scribbles asks for {max(scribbles)}")
    return reader, infos


def run_reporting_errors(run: Callable[[], int], *more: type[Exception]) -> int:
    """run(), or one `error:` line and 2 for the errors a user's input causes (`more`: the command's own)."""
    from ..model.backbones import WeightsUnavailableError
    from ..model.checkpoint import CheckpointError

    try:
        return run()
    except (ConfigError, DatasetError, OutputDirError, CheckpointError, WeightsUnavailableError, *more) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
