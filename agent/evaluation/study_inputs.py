"""What the study commands (crf_study.py, finetune_study.py) check before the first video plays, and how they
end on bad input: one `error:` line, exit status 2."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import MAX_INTERACTIONS_LIMIT, ConfigError, comma_names
from ..data.davis import DatasetError, DavisReader, SequenceInfo
from ..errors import ascii_int, os_error_line, repeated
from ..inference.plan import Strategy
from ..paths import output_file_problem
from .outputs import OutputDirError, replaced_input


def int_list(text: str, name: str, at_most: int | None = None) -> list[int]:
    """`1,2,4` -> [1, 2, 4], each >= 1 (and <= `at_most` when given) and none twice; a ConfigError naming the flag
    otherwise, also for an empty item (`1,,4`, a trailing comma: it was dropped without a word)."""
    parts = comma_names(text, name)
    try:
        values = [ascii_int(part) for part in parts]
    except ValueError:
        raise ConfigError(f"{name} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} {text!r}: expected integers >= 1")
    if at_most is not None and max(values) > at_most:
        raise ConfigError(f"{name} {text!r}: expected integers in 1..{at_most}")
    # `--scribbles 1,1` played every sample twice, then the fine-tuning study's summary failed on the repeated
    # sample (a pandas traceback once every variant had played); a capture did its work twice.
    twice = sorted(repeated(values))
    if twice:
        raise ConfigError(f"{name} {text!r}: {', '.join(map(str, twice))} given more than once")
    return values


def variant_assignments(spec: str, config_name: str) -> list[str]:
    """`field=value,field=value` -> the assignments; a ConfigError for none, for an empty item between commas
    (comma_names' line, as every comma list's: `a=1,,b=2` or a trailing comma was dropped without a word), or for
    a field given twice (the last would win silently)."""
    assignments = comma_names(spec, "--variant")
    if not assignments:
        raise ConfigError(f"--variant {spec!r}: expected field=value[,field=value] of {config_name}")
    fields = [a.partition("=")[0].strip() for a in assignments]
    twice = sorted(repeated(fields))
    if twice:
        raise ConfigError(f"--variant {spec!r}: sets {', '.join(twice)} more than once")
    return assignments


def check_round(value: int, name: str) -> int:
    """A round to play: 1..MAX_INTERACTIONS_LIMIT, as a session's --max-interactions (round 1000 would play for
    hours)."""
    if not 1 <= value <= MAX_INTERACTIONS_LIMIT:
        raise ConfigError(f"{name} {value}: expected an integer in 1..{MAX_INTERACTIONS_LIMIT} (a session's most "
                          "interactions)")
    return value


def check_output_file(output: Path, overwrite: bool, results: str, inputs: tuple[Path, ...] = ()) -> None:
    """--output must be a file that can be written and, unless `overwrite`, does not exist yet (`results`:
    whose results an existing one would hold, for the message); never one of `inputs` (the dataset, the
    checkpoint, cached samples) or a file inside one."""
    problem = output_file_problem(output, "--output is the CSV file to write")
    if problem:
        raise OutputDirError(problem)
    if output.exists() and not overwrite:
        raise OutputDirError(f"{output}: exists (an earlier {results}?): pass --overwrite or another --output")
    source = replaced_input(output, inputs) if output.exists() else None
    if source is not None:
        raise OutputDirError(f"{output}: --overwrite would replace the study's input {source} (or a file "
                             "in it): pass another --output")


def study_videos(davis_root: Path, subset: str, sequences: str | None,
                 scribbles: list[int]) -> tuple[DavisReader, list[SequenceInfo]]:
    """The chosen videos of a root, registered and every file checked as a session does (partial roots
    allowed), each with the scribble files asked for."""
    from ..data.registry import register_dataset

    wanted = comma_names(sequences, "--sequences")
    registration = register_dataset(davis_root, subset, wanted)
    reader = DavisReader(registration.root)
    infos = [registration.infos[name] for name in registration.sequences]
    for info in infos:
        if max(scribbles) > info.num_scribbles:
            raise DatasetError(f"{reader.scribbles_dir(info.name)}: has {info.num_scribbles} scribble file(s), "
                               f"--scribbles asks for {max(scribbles)}")
    return reader, infos


def check_study_strategy(strategy: Strategy, infos: list[SequenceInfo], rounds: int) -> None:
    """Every plan the study asks for (rounds 1..`rounds` of every video, no clock), asked once as a session's
    preflight does: a strategy that raises or returns no RoundPlan ends before the model is built."""
    from .preflight import check_strategy

    check_strategy(strategy, infos, rounds, math.inf)


def run_reporting_errors(run: Callable[[], int], *more: type[Exception]) -> int:
    """run(), or one `error:` line and 2 for the errors a user's input causes (`more`: the command's own) and for a
    crashed CRF worker (crf.CRFWorkerError, as a session says it: it was a traceback once the model was built);
    Ctrl-C, SIGTERM and SIGHUP end it with one `interrupted` line and 128 + the signal, as a session."""
    from ..inference.crf import CRFWorkerError
    from ..model.backbones import WeightsUnavailableError
    from ..signals import exit_code, signal_name, terminate_as_interrupt
    from .preflight import PREFLIGHT_ERRORS

    try:
        with terminate_as_interrupt():
            return run()
    except (*PREFLIGHT_ERRORS, WeightsUnavailableError, CRFWorkerError, *more) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the file system refuses (a name too long), a full disk
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from ..inference import crf

        crf.shutdown_workers()  # queued frames are not needed any more
        print(f"interrupted ({signal_name(interrupt)})", file=sys.stderr)
        return exit_code(interrupt)
