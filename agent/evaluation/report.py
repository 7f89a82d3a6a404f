"""Session results: our own summary (AUC, metric at 60 s) recomputed from the report, the
per-sequence x per-interaction table, and the time-vs-metric plot.

The summary follows the DAVIS Interactive definition, computed independently of the framework so
the two can be checked against each other: per (interaction, sequence, scribble, object) the metric
is averaged over frames; an interaction that was never evaluated (timeout) repeats the previous
value at zero cost; the curve's time axis is the cumulative mean interaction time of the samples,
starting at (0, 0) and held flat until the global timeout (mean objects per sequence x max time);
AUC is the trapezoid area divided by that timeout, and the metric at 60 s is read off the curve.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CommandParser, counted, first_line, os_error_line
from ..paths import json_ready, not_a_file, output_file_problem, path_arg, read_json
from .outputs import atomic_path

log = logging.getLogger(__name__)

METRIC_COLUMNS = {"J": "jaccard", "F": "contour", "J_AND_F": "j_and_f"}
KEYS = ["interaction", "sequence", "scribble_idx", "object_id"]
# A sample's metric falling by more than this after a new stroke counts as a drop (#15: corrections never hurt).
DROP_THRESHOLD = 0.02


@dataclass(frozen=True)
class SampleLayout:
    """What the evaluation expected: per sequence, its number of scribbles and objects."""

    num_scribbles: dict[str, int]
    num_objects: dict[str, int]

    @property
    def mean_objects(self) -> float:
        return float(np.mean(list(self.num_objects.values())))


def load_report(path: str | Path) -> pd.DataFrame:
    """A report CSV as written by the session (or by davisinteractive), with numeric columns."""
    df = pd.read_csv(path, index_col=0)
    for column in df.columns:
        if column not in ("sequence", "session_id"):
            df[column] = pd.to_numeric(df[column])
    df["sequence"] = df["sequence"].astype(str)
    return df


def numeric_report(report: pd.DataFrame) -> pd.DataFrame:
    df = report.drop(columns=[c for c in ("session_id",) if c in report.columns]).copy()
    for column in df.columns:
        df[column] = df[column].astype(str) if column == "sequence" else pd.to_numeric(df[column])
    return df


def per_object_results(
    report: pd.DataFrame, layout: SampleLayout, max_interactions: int, samples: set[tuple[str, int]] | None = None
) -> pd.DataFrame:
    """Frame-averaged results for every expected (interaction, sequence, scribble, object), of `samples`
    ((sequence, scribble_idx) pairs) only when given.

    Missing interactions (never submitted in time) repeat the previous result with timing 0, and
    score 0 when nothing was ever submitted for the sample.
    """
    df = numeric_report(report)
    values = ["jaccard", "contour", "j_and_f", "timing"]
    means = df.groupby(KEYS)[values].mean() if len(df) else pd.DataFrame(columns=values)
    rows = []
    # In name order: the averages below then do not depend on the order samples were played in (merged
    # shards give the very numbers of one run).
    for sequence in sorted(layout.num_scribbles):
        for scribble in range(1, layout.num_scribbles[sequence] + 1):
            if samples is not None and (sequence, scribble) not in samples:
                continue
            for obj in range(1, layout.num_objects[sequence] + 1):
                previous = {"jaccard": 0.0, "contour": 0.0, "j_and_f": 0.0}
                for interaction in range(1, max_interactions + 1):
                    key = (interaction, sequence, scribble, obj)
                    if key in means.index:
                        result = means.loc[key].to_dict()
                        previous = {k: result[k] for k in previous}
                        evaluated = True
                    else:
                        result = {**previous, "timing": 0.0}
                        evaluated = False
                    rows.append(dict(zip(KEYS, key, strict=True), **result, evaluated=evaluated))
    return pd.DataFrame(rows)


def summarize(
    report: pd.DataFrame,
    layout: SampleLayout,
    max_interactions: int,
    max_time: float,
    metric: str = "J",
    time_threshold: float = 60.0,
    samples: set[tuple[str, int]] | None = None,
) -> dict:
    """AUC and metric@threshold of the time-vs-metric curve (see the module docstring), over `samples`
    ((sequence, scribble_idx) pairs; None: every sample of the layout). Nothing to summarise (no sample,
    no interaction) gives None figures rather than an error: the summary is written while a run fails."""
    column = METRIC_COLUMNS[metric]
    results = per_object_results(report, layout, max_interactions, samples) if max_interactions >= 1 else \
        pd.DataFrame()
    if results.empty:
        return {"auc": None, "metric": metric, "metric_at_threshold": None, "threshold": time_threshold,
                "curve": {"time": [], metric: []}, "per_interaction": {metric: [], "seconds": []},
                "evaluated_fraction": 0.0, "drops": drops_after_strokes(results, column)}
    metric_per_interaction = results.groupby("interaction")[column].mean()
    sample_time = results.groupby(["sequence", "scribble_idx", "interaction"])["timing"].mean()
    time_per_interaction = sample_time.groupby("interaction").mean()

    time = np.concatenate([[0.0], time_per_interaction.cumsum().to_numpy()])
    values = np.concatenate([[0.0], metric_per_interaction.to_numpy()])
    objects = [layout.num_objects[s] for s in results["sequence"].unique()] if samples is not None else None
    timeout = (float(np.mean(objects)) if objects else layout.mean_objects) * max_time
    time = np.append(time, timeout)
    values = np.append(values, values[-1])
    auc = float(np.trapezoid(values, time) / time.max()) if time.max() > 0 else 0.0
    return {
        "auc": auc,
        "metric": metric,
        "metric_at_threshold": float(np.interp(time_threshold, time, values)),
        "threshold": time_threshold,
        "curve": {"time": time.tolist(), metric: values.tolist()},
        "per_interaction": {
            metric: metric_per_interaction.round(6).tolist(),
            "seconds": time_per_interaction.round(4).tolist(),
        },
        "evaluated_fraction": float(results["evaluated"].mean()),
        "drops": drops_after_strokes(results, column),
    }


def drops_after_strokes(results: pd.DataFrame, column: str, threshold: float = DROP_THRESHOLD) -> dict:
    """The rounds after which a sample's metric (the mean over its objects) fell by more than `threshold` from
    the round before: {"threshold", "rounds" (rounds 2..N of every sample, those compared), "samples" (one dict
    per drop: sequence, scribble_idx, interaction, change), in name order}. A round not submitted in time keeps
    the last one's metric (per_object_results), so it is no drop; the round that comes after it is compared
    with that."""
    found, rounds = [], 0
    if not results.empty:
        per_sample = results.groupby(["sequence", "scribble_idx", "interaction"])[column].mean()
        for (sequence, scribble), values in per_sample.groupby(level=[0, 1]):
            values = values.droplevel([0, 1]).sort_index()
            changes = values.diff().iloc[1:]
            rounds += len(changes)
            found += [{"sequence": str(sequence), "scribble_idx": int(scribble), "interaction": int(interaction),
                       "change": round(float(change), 6)}
                      for interaction, change in changes.items() if change < -threshold]
    return {"threshold": threshold, "rounds": rounds, "samples": found}


def drops_line(summary: dict) -> str | None:
    """'J fell by more than 0.02 after a new stroke in 2 of 105 rounds: car-shadow 3 round 6 (-0.047), ...', or
    None for a summary without the count (written before it existed, or nothing played)."""
    drops = summary.get("drops")
    if not isinstance(drops, dict) or not drops.get("rounds"):
        return None
    found = drops["samples"]
    where = ", ".join(f"{d['sequence']} {d['scribble_idx']} round {d['interaction']} ({d['change']:+.3f})"
                      for d in found)
    return (f"{summary['metric']} fell by more than {drops['threshold']:g} after a new stroke in {len(found)} of "
            f"{counted(drops['rounds'], 'round')}" + (f": {where}" if where else ""))


def summarize_run(
    report: pd.DataFrame,
    layout: SampleLayout,
    max_interactions: int,
    max_time: float,
    metric: str = "J",
    complete: bool = True,
    time_threshold: float = 60.0,
) -> dict:
    """summarize() of a whole run; for a run that stopped early (`complete` False) `auc` and
    `metric_at_threshold` are None, because the unplayed samples would count as J = 0 and the unplayed
    rounds of the last one as its last J: the figures over the samples played so far are given apart, as
    `auc_partial` and `metric_at_threshold_partial` (with `samples_played` of `samples_total`)."""
    total = sum(layout.num_scribbles.values())
    if complete:
        return {**summarize(report, layout, max_interactions, max_time, metric, time_threshold), "complete": True,
                "samples_total": total}
    df = numeric_report(report)
    played = {(str(q), int(i)) for q, i in zip(df["sequence"], df["scribble_idx"], strict=True)} if len(df) else set()
    partial = summarize(report, layout, max_interactions, max_time, metric, time_threshold, samples=played)
    return {
        **partial,
        "auc": None,
        "metric_at_threshold": None,
        "auc_partial": partial["auc"],
        "metric_at_threshold_partial": partial["metric_at_threshold"],
        "complete": False,
        "samples_played": len(played),
        "samples_total": total,
    }


def per_sequence_table(report: pd.DataFrame, metric: str = "J") -> pd.DataFrame:
    """Rows (sequence, scribble_idx), columns interaction 1..N: the metric averaged over objects and frames."""
    df = numeric_report(report)
    column = METRIC_COLUMNS[metric]
    per_object = df.groupby(KEYS)[column].mean().reset_index()
    table = per_object.pivot_table(index=["sequence", "scribble_idx"], columns="interaction", values=column)
    table.columns = [f"{metric}@{int(i)}" for i in table.columns]
    return table


def figures_line(summary: dict) -> str:
    """'AUC-J 0.823, J@60s 0.846', or the partial figures of a run that stopped early, said so."""
    metric, threshold = summary["metric"], summary["threshold"]
    if summary.get("auc") is not None:
        return f"AUC-{metric} {summary['auc']:.3f}, {metric}@{threshold:.0f}s {summary['metric_at_threshold']:.3f}"
    if summary.get("auc_partial") is not None:
        return (f"incomplete run ({summary.get('samples_played')} of {summary.get('samples_total')} samples): "
                f"partial AUC-{metric} {summary['auc_partial']:.3f}, {metric}@{threshold:.0f}s "
                f"{summary['metric_at_threshold_partial']:.3f}")
    return "no interaction evaluated"


def printed_figures(summary: dict) -> str:
    """What a finished run (or merge) prints: 'AUC-J: 0.823' and 'J@60s: 0.846' on two lines, or figures_line's
    one for a run without them (stopped early, nothing evaluated); then drops_line's, where there is one."""
    drops = drops_line(summary)
    if summary.get("auc") is None:
        return figures_line(summary) + (f"\n{drops}" if drops else "")
    metric = summary["metric"]
    return (f"AUC-{metric}: {summary['auc']:.3f}\n"
            f"{metric}@{summary['threshold']:.0f}s: {summary['metric_at_threshold']:.3f}" + (f"\n{drops}" if drops else ""))


def plot_curve(summary: dict, path: str | Path, title: str) -> None:
    plot_curves({"": summary}, path, title)


# Formats matplotlib writes by suffix (any other suffix it refuses, and none gets ".png" appended).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def plot_curves(summaries: dict[str, dict], path: str | Path, title: str) -> None:
    """Metric against cumulative time, one line per run ({label: summary}; one unlabeled run is shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    end = 1.0
    for label, summary in summaries.items():
        metric = summary["metric"]
        time, values = summary["curve"]["time"], summary["curve"][metric]
        figures = figures_line(summary)
        ax.plot(time, values, marker="o", markersize=3, label=f"{label}: {figures}" if label else None)
        if len(summaries) == 1:
            ax.fill_between(time, values, alpha=0.15)
            title = f"{title}\n{figures}"
        end = max(end, max(time, default=0.0))
    first = next(iter(summaries.values()))
    ax.axvline(first["threshold"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("cumulative interaction time per sample (s)")
    ax.set_ylabel(first["metric"])
    ax.set_ylim(0, 1)
    ax.set_xlim(0, end)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if any(summaries):
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class ResultsNotWritten(OSError):
    """A completed run's (or merge's) result file the disk refused (write_outputs, strict), named as an OSError;
    `summary`: the run's figures, which the command prints all the same (a full disk at the end lost the AUC from
    the terminal, though summary.json, written first, held it)."""

    summary: dict | None = None


def write_outputs(
    output_dir: Path,
    report: pd.DataFrame,
    summary: dict,
    title: str,
    extra: dict | None = None,
    strict: bool = False,
) -> dict[str, Path]:
    """Write summary.json, report.csv, per_sequence.csv and curve.png, each atomically; return their paths.

    summary.json goes first; a file that cannot be written is logged and skipped, so that one failure (a
    plot, a full disk) never costs the others, nor the exception that stopped the run. `strict` (a run that
    completed): then ResultsNotWritten (an OSError) naming the first file not written, so that the caller does not
    publish results without it (a full disk at the end replaced an earlier complete run's folder with one lacking
    its report.csv or summary.json, and the command exited 0); it holds `summary`, for the caller to print."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": output_dir / "summary.json",
        "report": output_dir / "report.csv",
        "per_sequence": output_dir / "per_sequence.csv",
        "plot": output_dir / "curve.png",
    }
    document = {**summary, **(extra or {})}

    def per_sequence(tmp: Path) -> None:
        if len(report):
            per_sequence_table(report, summary["metric"]).to_csv(tmp)
        else:
            tmp.write_text("sequence,scribble_idx\n")

    writers = {
        "summary": lambda tmp: tmp.write_text(json.dumps(json_ready(document), indent=2)),
        "report": report.to_csv,
        "per_sequence": per_sequence,
        "plot": lambda tmp: plot_curve(summary, tmp, title),
    }
    written, failed = {}, {}
    for name, write in writers.items():
        try:
            with atomic_path(paths[name]) as tmp:
                write(tmp)
            written[name] = paths[name]
        except Exception as error:  # noqa: BLE001  (one lost file must not lose the rest)
            if not (strict and not failed):  # strict: the first is the caller's error line (it was said twice)
                log.error("could not write %s: %s", paths[name], error)
            failed[paths[name]] = error
    if strict and failed:
        path, error = next(iter(failed.items()))
        why = getattr(error, "strerror", None) or first_line(error)
        unwritten = ResultsNotWritten(getattr(error, "errno", None), f"could not be written ({why})", str(path))
        unwritten.summary = summary
        raise unwritten from error
    return written


def main(argv: list[str] | None = None) -> int:
    """python -m agent.report RUN_DIR[=LABEL] ... --output curves.png: the runs' curves in one plot.
    python -m agent.report merge RUN_DIR... --output DIR: shards' results merged into one run's.
    python -m agent.report compare RUN_A RUN_B: the second run against the first, per interaction and sample."""
    import sys

    try:
        return _main(argv)
    except OSError as error:  # a path the file system refuses (a name too long), a full disk
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        from .sharding import main as merge_main

        return merge_main(argv[1:])
    if argv[:1] == ["compare"]:
        from .compare import main as compare_main

        return compare_main(argv[1:])
    parser = CommandParser(prog="python -m agent.report", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="session output directories (with summary.json), optionally =LABEL")
    parser.add_argument("--output", type=path_arg, required=True, help="the image to write (.png, .pdf or .svg)")
    parser.add_argument("--title", default="J over time", help="the plot's title (default: J over time)")
    args = parser.parse_args(argv)
    problem = output_file_problem(args.output, "--output is the image file to write")  # a FIFO: savefig waited
    if problem:
        parser.exit(2, f"error: {problem}\n")
    if args.output.suffix.lower() not in PLOT_SUFFIXES:
        parser.exit(2, f"error: --output {args.output}: name the image file ({', '.join(PLOT_SUFFIXES)})\n")
    # A run's own curve.png (the one result its suffix check lets through) was replaced without a word.
    if args.output.name == "curve.png" and (args.output.parent / "summary.json").exists():
        parser.exit(2, f"error: --output {args.output}: it is the curve of the run in {args.output.parent}, one of "
                       "its results: name another file\n")
    summaries, metrics = {}, {}
    for run in args.runs:
        directory, label = _run_and_label(run)
        path = Path(directory) / "summary.json"
        why = not_a_file(path)
        if why:
            parser.exit(2, f"error: {path} {why} (pass the output directory of a session run)\n")
        try:
            summary = read_json(path)
        except ValueError as error:  # also not UTF-8, or nested too deeply
            parser.exit(2, f"error: {path}: not valid JSON ({error})\n")
        label = label or Path(directory).name
        if label in summaries:  # the later run's curve replaced the earlier one's without a word
            parser.exit(2, f"error: {run}: its label {label!r} is an earlier run's too (one curve would replace the "
                           "other): label them RUN_DIR=LABEL\n")
        summaries[label] = summary
        if not isinstance(summary, dict) or not {"metric", "curve", "threshold"} <= summary.keys():
            parser.exit(2, f"error: {path}: not a session run's summary.json (no metric, curve or threshold)\n")
        metrics[run] = summary["metric"]
    if len(set(map(str, metrics.values()))) > 1:  # one axis, labelled with the first run's metric
        runs = ", ".join(f"{run} ({metric})" for run, metric in metrics.items())
        parser.exit(2, f"error: {runs}: runs of different metrics, whose curves are not comparable: plot each "
                       "metric's runs apart\n")
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        # Atomically: a full disk left a truncated PNG in place of the earlier plot, and "error: a path: ..."
        with atomic_path(args.output) as tmp:
            plot_curves(summaries, tmp, args.title)
    except OSError as error:
        parser.exit(2, f"error: {args.output}: cannot write it ({error.strerror or first_line(error)})\n")
    except (KeyError, TypeError, ValueError) as error:
        parser.exit(2, f"error: a summary.json of {', '.join(args.runs)} does not hold a curve ({type(error).__name__}: "
                       f"{error})\n")
    print(f"wrote {args.output}")
    return 0


def _run_and_label(text: str) -> tuple[str, str]:
    """RUN_DIR[=LABEL] -> (RUN_DIR, LABEL or ""). A folder whose name holds `=` (`outputs/crf.iterations=10`, named
    after a --set) is a run, not `outputs/crf.iterations` labelled `10` ("summary.json does not exist"): the
    first split whose left side is a folder, the whole text first; else at the first `=`."""
    splits = [(text, "")] + [(text[:i], text[i + 1:]) for i, c in enumerate(text) if c == "="]
    return next((split for split in splits if Path(split[0]).is_dir()), splits[min(1, len(splits) - 1)])


if __name__ == "__main__":
    raise SystemExit(main())
