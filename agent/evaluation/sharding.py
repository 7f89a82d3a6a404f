"""Sharded evaluation: `--shard K/N` plays a deterministic part of the sequences, `merge` joins the parts.

A shard holds whole sequences (every scribble of each), so each sample is timed exactly as in one run.
The split is a pure function of the sequences' metadata: sequences are dealt, costliest first (scribbles
x frames x objects, ties by name), each to the shard with the least cost so far (ties: the lower shard),
so the shards of one evaluation take about equally long and every process computes the same split.

`python -m agent.report merge RUN_DIR... --output DIR` concatenates the shards' report.csv and summarizes
the whole with the shards' layouts (agent/evaluation/report.py), which gives the summary, curve and
per-sequence table of one run on the same predictions: the summary does not depend on the order of the
report's samples.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import MAX_INTERACTIONS_LIMIT, MAX_TIME_LIMIT, RESOLVED_KEY, ConfigError, parse_shard
from ..data.davis import MAX_OBJECT_ID, SequenceInfo
from ..errors import CommandParser, counted, first_line, os_error_line, repeated
from ..paths import lock_folder, not_a_file, path_arg, read_json, unlock_folder

log = logging.getLogger(__name__)


class MergeError(ValueError):
    """Shard results that cannot be merged into one evaluation, or a run folder that is not a session run's results
    (read_run); the message says which and why."""


def _cost(info: SequenceInfo) -> int:
    return max(info.num_scribbles, 1) * info.num_frames * max(info.num_objects, 1)


def assign_shards(infos: dict[str, SequenceInfo], count: int) -> dict[str, int]:
    """Sequence name -> its shard (1..count)."""
    loads = [0] * count
    assignment = {}
    for name in sorted(infos, key=lambda n: (-_cost(infos[n]), n)):
        shard = min(range(count), key=lambda k: (loads[k], k))
        loads[shard] += _cost(infos[name])
        assignment[name] = shard + 1
    return assignment


def shard_sequences(infos: dict[str, SequenceInfo], index: int, count: int) -> list[str]:
    """The sequences of shard `index` of `count` (in the order of `infos`); ValueError when it has none, or when
    another shard would (its split could never be merged)."""
    # A later shard with none: this one's split could never be merged. Checked before assign_shards sizes a
    # list by `count` (1/99999999999 was a MemoryError).
    if count > len(infos):
        empty = f"shard {index}/{count} has" if index > len(infos) else \
            f"shard {index}/{count}: shard {len(infos) + 1}/{count} would have"
        raise ValueError(f"{empty} no sequence: there are only {len(infos)} sequence(s) to split; use at most "
                         f"{len(infos)} shards")
    assignment = assign_shards(infos, count)
    return [name for name in infos if assignment[name] == index]  # none empty: each gets one first


# --- merging -------------------------------------------------------------------------------------------
_SAME = ("metric", "max_interactions", "max_time", "threshold", "predictor", "strategy")


def _no_summary_yet(directory: Path) -> None:
    """MergeError for a session run's folder (its config.json, written first) without its summary.json, written
    last: the run is still going (it holds the folder's lock) or was killed. It was "summary.json does not exist
    (pass the output directories of session runs)", of one."""
    try:
        unlock_folder(lock_folder(directory))
    except BlockingIOError:
        raise MergeError(f"{directory}: a run is still writing there (no summary.json yet): pass it once the run "
                         "completes") from None
    except OSError:  # cannot be opened to lock: the checks that follow say why
        return
    raise MergeError(f"{directory / 'summary.json'} does not exist: the run there stopped before writing its summary "
                     "(killed?), so it has no results to read: run it again")


def read_run(directory: Path, required: tuple[str, ...] = (*_SAME, "shard"),
             with_config: bool = True) -> tuple[dict, pd.DataFrame, dict]:
    """(summary.json, report.csv, config.json or {}) of a session run's folder, each checked as a session writes
    it (the summary's `required` keys, its layout and values; the report's columns, finite values and samples of
    that layout); MergeError names the file and what is wrong. `report merge` and `report compare` read runs so."""
    from .report import load_report

    summary_path, report_path = directory / "summary.json", directory / "report.csv"
    if not summary_path.exists() and (directory / "config.json").is_file():
        _no_summary_yet(directory)
    for path in (summary_path, report_path):
        why = not_a_file(path)
        if why:
            raise MergeError(f"{path} {why} (pass the output directories of session runs)")
    config_path = directory / "config.json"
    summary = _read_json(summary_path)
    config = _read_json(config_path) if with_config and config_path.is_file() else {}
    if not isinstance(summary, dict) or not isinstance(config, dict):
        raise MergeError(f"{summary_path if not isinstance(summary, dict) else config_path}: not a run's JSON object")
    if "layout" not in summary:
        raise MergeError(f"{summary_path} has no sample layout (written before sharding existed): re-run it")
    # `required` and the keys _check_summary_values reads, each named once
    missing = [key for key in dict.fromkeys((*required, "metric", "threshold", "max_interactions", "max_time"))
               if key not in summary]
    if missing:
        raise MergeError(f"{summary_path}: no {', '.join(missing)} (not a session run's summary.json)")
    layout = summary["layout"]
    if not (isinstance(layout, dict) and all(isinstance(layout.get(key), dict) for key in ("num_scribbles",
                                                                                          "num_objects"))
            and layout["num_scribbles"].keys() == layout["num_objects"].keys()):
        raise MergeError(f"{summary_path}: its layout is not num_scribbles and num_objects of the same sequences")
    # A session's layout names its sequences; none gave no figures, a traceback once the merge was published.
    if not layout["num_scribbles"]:
        raise MergeError(f"{summary_path}: its layout names no sequence (not a session run's summary.json)")
    _check_summary_values(summary_path, summary)
    try:
        report = load_report(report_path)
    except (ValueError, KeyError, UnicodeDecodeError) as error:  # pandas' ParserError is a ValueError
        raise MergeError(f"{report_path}: not a session run's report.csv ({first_line(error)})") from error
    absent = [column for column in (*_KEYS, *_VALUES) if column not in report.columns]
    if absent:
        raise MergeError(f"{report_path}: no {', '.join(absent)} column (not a session run's report.csv)")
    # A NaN would be averaged into the merged AUC silently (a session never writes one).
    for column in report.columns.drop(["sequence", "session_id"], errors="ignore"):
        bad = report.index[~np.isfinite(report[column].to_numpy(dtype=float))]
        if len(bad):
            raise MergeError(f"{report_path}: row {bad[0]} has {column} {report.at[bad[0], column]}, not a finite "
                             "number")
    _check_samples(report_path, report, summary)
    return summary, report, config


_KEYS = ("sequence", "scribble_idx", "object_id", "interaction")
_VALUES = ("jaccard", "contour", "j_and_f", "timing")


def _is_int(value, low: int, high: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= (high or value)


def _check_summary_values(path: Path, summary: dict) -> None:
    """MergeError for a summary value a session never writes (a traceback, or a merge published and then
    failed, before): the session's own limits."""
    from .report import METRIC_COLUMNS

    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)  # noqa: E731
    checks = {
        # Text first: a list or mapping (`["J"]`) was "unhashable type" looked up, a traceback.
        "metric": (isinstance(summary["metric"], str) and summary["metric"] in METRIC_COLUMNS,
                   f"one of {', '.join(METRIC_COLUMNS)}"),
        "threshold": (number(summary["threshold"]) and summary["threshold"] >= 0, "a number of seconds >= 0"),
        "max_interactions": (_is_int(summary["max_interactions"], 1, MAX_INTERACTIONS_LIMIT),
                             f"an integer in 1..{MAX_INTERACTIONS_LIMIT}"),
        "max_time": (number(summary["max_time"]) and 0 < summary["max_time"] <= MAX_TIME_LIMIT,
                     f"a number of seconds in (0, {MAX_TIME_LIMIT:g}]"),
    }
    for key in ("rounds_played", "rounds_late"):  # absent from a summary written before they were counted
        if key in summary:
            checks[key] = (_is_int(summary[key], 0), "an integer >= 0")
    # Read as truth values: "interrupted": "false" (edited by hand) counted the shard as interrupted, its figures
    # partial; a "skipped_sequences" text or list was an AttributeError traceback once every check had passed.
    for key in ("interrupted", "complete"):
        if key in summary:
            checks[key] = (isinstance(summary[key], bool), "true or false")
    if "skipped_sequences" in summary:
        skipped = summary["skipped_sequences"]
        checks["skipped_sequences"] = (skipped is None or isinstance(skipped, dict),
                                       "a mapping of sequence names to the reason each was left out")
    for key, (good, what) in checks.items():
        if not good:
            raise MergeError(f"{path}: {key} is {summary[key]!r}, not {what}")
    for key, high in (("num_scribbles", None), ("num_objects", MAX_OBJECT_ID)):
        for name, value in summary["layout"][key].items():
            if not _is_int(value, 1, high):
                raise MergeError(f"{path}: layout {key} of {name} is {value!r}, not an integer >= 1"
                                 + (f" and <= {high}" if high else ""))


def _check_samples(path: Path, report: pd.DataFrame, summary: dict) -> None:
    """MergeError for a row of a sample the run's layout does not have (another run's report.csv): it was left
    out without a word, and the layout's own samples counted as never played (J = 0)."""
    layout = summary["layout"]
    sequences = report["sequence"].astype(str)
    known = sequences.isin(list(layout["num_scribbles"]))
    scribbles = sequences.map(layout["num_scribbles"]).where(known, 0)
    objects = sequences.map(layout["num_objects"]).where(known, 0)
    fits = known & report["scribble_idx"].between(1, scribbles) & report["object_id"].between(1, objects) \
        & report["interaction"].between(1, summary["max_interactions"])
    for column in ("scribble_idx", "object_id", "interaction"):
        fits &= report[column] == report[column].round()
    if not fits.all():
        row = report.index[~fits.to_numpy()][0]
        sample = ", ".join(f"{column} {report.at[row, column]}" for column in _KEYS)
        raise MergeError(f"{path}: row {row} ({sample}) is not a sample of its summary.json's layout and "
                         f"max_interactions {summary['max_interactions']} (the report of another run?)")


def _read_json(path: Path):
    try:
        return read_json(path)
    except ValueError as error:  # also not UTF-8, or nested too deeply
        raise MergeError(f"{path}: not valid JSON ({error})") from error
    except OSError as error:
        raise MergeError(f"{path}: cannot be read ({error.strerror or error})") from error


def _check_shards(directories: list[Path], summaries: list[dict]) -> None:
    specs = [summary.get("shard") for summary in summaries]
    if not any(specs):
        return
    if not all(specs):
        unsharded = [str(d) for d, spec in zip(directories, specs, strict=True) if not spec]
        raise MergeError(f"{', '.join(unsharded)}: not a shard, and the other runs are")
    parsed = []
    for directory, spec in zip(directories, specs, strict=True):
        try:
            parsed.append(parse_shard(spec))
        except ConfigError:
            raise MergeError(f"{directory / 'summary.json'}: shard {spec!r} is not K/N with 1 <= K <= N") from None
    counts = {count for _, count in parsed}
    if len(counts) != 1:
        raise MergeError(f"the runs are shards of different splits: {', '.join(sorted(set(specs)))}")
    count = counts.pop()
    indices = [index for index, _ in parsed]
    twice = sorted(repeated(indices))
    if twice:
        raise MergeError(f"shard(s) {', '.join(f'{i}/{count}' for i in twice)} given more than once")
    # The first ten missing, found without a set of all N: a summary saying 1/99999999999 took all memory.
    missing = list(itertools.islice((i for i in range(1, count + 1) if i not in indices), 10))
    if missing:
        more = ", ..." if count - len(indices) > len(missing) else ""
        raise MergeError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)}{more} missing: a merge of part of "
                         "the shards is not the evaluation's result")


# config.json fields a machine sets for itself (shards run on several): they change no prediction.
_PER_MACHINE = {"session.output_dir", "session.shard", "session.user_key", "session.connect_timeout",
                "session.read_timeout", "session.retries", "agent.device", "agent.crf.workers",
                "agent.embedding_cache_mb"}
# Paths, compared by their last name: shards on several machines may find one dataset at different places.
_PATHS = {"session.davis_root", "agent.checkpoint"}


def _setup(summary: dict, config: dict) -> dict[str, str]:
    """What makes a run's predictions those of one evaluation: its dataset and config.json, without what a machine
    sets for itself, as {dotted key: JSON text}."""
    flat: dict[str, object] = {}

    def walk(value, key: str) -> None:
        if isinstance(value, dict) and value:
            for name, inner in value.items():
                walk(inner, f"{key}.{name}" if key else str(name))
        elif key not in _PER_MACHINE:
            flat[key] = value

    # The marker that a run wrote the config whole (config.RESOLVED_KEY) is no setting: a run of an older version
    # has none.
    walk({key: value for key, value in config.items() if key != RESOLVED_KEY}, "")
    if "agent" in config and not flat.get("agent.checkpoint"):
        from ..model.checkpoint import DEFAULT_CHECKPOINT

        flat["agent.checkpoint"] = str(DEFAULT_CHECKPOINT)  # None: the shipped one
    for key in _PATHS & flat.keys():
        flat[key] = Path(str(flat[key])).name if flat[key] else flat[key]
    flat["dataset"] = Path(str(summary.get("dataset"))).name  # the built-in data's folder names its spec
    return {key: json.dumps(value, sort_keys=True, default=str) for key, value in flat.items()}


def _check_same_setup(directories: list[Path], summaries: list[dict], configs: list[dict]) -> None:
    """MergeError when two runs played other data or other settings (another checkpoint, a --set): shard 1 of one
    experiment merged with shard 2 of another, or of another dataset, was published as one evaluation."""
    setups = [_setup(summary, config) for summary, config in zip(summaries, configs, strict=True)]
    for directory, setup, config in zip(directories[1:], setups[1:], configs[1:], strict=True):
        # A run without config.json (written by hand, or before it existed): its dataset alone is compared.
        keys = sorted(setups[0].keys() | setup.keys()) if configs[0] and config else ["dataset"]
        for key in keys:
            first, other = setups[0].get(key, "(none)"), setup.get(key, "(none)")
            if first != other:
                raise MergeError(f"{directories[0]} and {directory} differ in {key} ({first} and {other}): they are "
                                 "not one evaluation")


def merge_runs(directories: list[str | Path], output_dir: str | Path, final_dir: str | Path | None = None) -> dict:
    """Merge shard run directories into `output_dir` (report.csv, summary.json, per_sequence.csv, curve.png,
    config.json; `final_dir`: where they will be published, for config.json); returns the merged summary.
    MergeError names what does not fit."""
    from .report import SampleLayout, summarize_run, write_outputs

    directories = [Path(d) for d in directories]
    runs = [read_run(d) for d in directories]
    summaries = [summary for summary, _, _ in runs]
    for key in _SAME:
        values = {json.dumps(summary.get(key)) for summary in summaries}
        if len(values) > 1:
            raise MergeError(f"the runs differ in {key} ({', '.join(sorted(values))}): they are not one evaluation")
    _check_shards(directories, summaries)
    _check_same_setup(directories, summaries, [config for _, _, config in runs])
    num_scribbles: dict[str, int] = {}
    num_objects: dict[str, int] = {}
    owner: dict[str, Path] = {}
    for directory, summary in zip(directories, summaries, strict=True):
        for name, scribbles in summary["layout"]["num_scribbles"].items():
            if name in owner:
                raise MergeError(f"sequence {name} is in both {owner[name]} and {directory}")
            owner[name] = directory
            num_scribbles[name] = scribbles
            num_objects[name] = summary["layout"]["num_objects"][name]
    layout = SampleLayout(num_scribbles=num_scribbles, num_objects=num_objects)
    first = summaries[0]
    report = pd.concat([report for _, report, _ in runs], ignore_index=True)
    # An interrupted shard's unplayed samples: as in an interrupted run, no AUC over them (it counted them as J = 0
    # and was published as the evaluation's figure), the figures over the samples played given apart.
    interrupted = [str(d) for d, s in zip(directories, summaries, strict=True)
                   if s.get("interrupted") or s.get("complete") is False]
    summary = summarize_run(report, layout, first["max_interactions"], first["max_time"], first["metric"],
                            complete=not interrupted, time_threshold=first["threshold"])
    summary["interrupted"] = bool(interrupted)
    if all("rounds_late" in s for s in summaries):  # shards written before these counts have none to add
        summary["rounds_played"] = sum(int(s.get("rounds_played", 0)) for s in summaries)
        summary["rounds_late"] = sum(int(s["rounds_late"]) for s in summaries)
    if interrupted:
        log.warning("interrupted shard(s), their unfinished samples count as in any interrupted run: %s",
                    ", ".join(interrupted))
    output_dir = Path(output_dir)
    extra = {key: first.get(key) for key in ("predictor", "strategy", "dataset", "dataset_kind")}
    # Every shard lists the subset's sequences left out (absent, or skipped as unusable): a merge without them read
    # as an evaluation of the whole subset, where one unsharded run says what it left out.
    skipped = {name: why for s in summaries for name, why in (s.get("skipped_sequences") or {}).items()
               if name not in num_scribbles}
    extra.update(sequences=sorted(num_scribbles), layout={"num_scribbles": num_scribbles, "num_objects": num_objects},
                 skipped_sequences=skipped, max_interactions=first["max_interactions"],
                 max_time=first["max_time"], shard=None, merged_from=[str(d) for d in directories])
    subset = runs[0][2].get("session", {}).get("subset", "?")
    title = (f"{first.get('predictor')} / {first.get('strategy')} on {subset} ({len(num_scribbles)} sequences, "
             f"{len(directories)} runs merged)")
    write_outputs(output_dir, report, summary, title, extra, strict=True)
    config = runs[0][2]
    if config:
        session = {**config.get("session", {}), "shard": None, "output_dir": str(final_dir or output_dir)}
        (output_dir / "config.json").write_text(json.dumps({**config, "session": session}, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """python -m agent.report merge RUN_DIR... --output DIR: the shards' results as one run's."""

    parser = CommandParser(prog="python -m agent.report merge", description=main.__doc__)
    parser.add_argument("runs", nargs="+", type=path_arg, help="output directories of the shards' session runs")
    parser.add_argument("--output", type=path_arg, required=True, help="directory for the merged results")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --output once the merge completes (never one of the runs)")
    args = parser.parse_args(argv)
    from .outputs import OutputDirError, PublishError, discard, prepare_output_dir, publish
    from .report import ResultsNotWritten, printed_figures

    try:
        target = prepare_output_dir(args.output, args.overwrite, inputs=tuple(args.runs))
    except OutputDirError as error:
        parser.exit(2, f"error: {str(error).replace('--output-dir', '--output')}\n")
    try:
        summary = merge_runs(args.runs, target.work, final_dir=target.final)
    except MergeError as error:
        discard(target)
        parser.exit(2, f"error: {error}\n")
    except OSError as error:  # a file the disk refused: not published (an earlier merge stays)
        discard(target)
        if isinstance(error, ResultsNotWritten):  # the merge completed: its figures all the same
            print(printed_figures(error.summary))
        parser.exit(2, f"error: {os_error_line(error)}" + (f"; the incomplete merge is in {target.work}"
                                                           if target.work.is_dir() else "") + "\n")
    print(printed_figures(summary))  # an interrupted shard: the figures over the samples played, said so
    try:
        publish(target)
    except PublishError as error:  # the merge is complete: the line says where it lies
        parser.exit(2, f"error: {error}\n")
    print(f"merged {counted(len(args.runs), 'run')} into {args.output}")
    return 0
