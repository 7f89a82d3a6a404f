"""Two session runs side by side, on the samples both played: `python -m agent.report compare RUN_A RUN_B`.

Each run's metric per sample and interaction is read from its report.csv as the summary counts it
(report.per_object_results: the mean over a sample's objects; a round not submitted in time keeps the last one's
value), so the figures agree with each run's summary.json. Printed: the mean per interaction of each run and their
difference, the mean over the interactions, the drops after a new stroke (report.drops_after_strokes), and the
samples whose last interaction changed most.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..errors import CommandParser, counted, first_line
from ..paths import path_arg
from .report import (
    METRIC_COLUMNS,
    SampleLayout,
    drops_after_strokes,
    figures_line,
    per_object_results,
)
from .sharding import MergeError, read_run


class CompareError(ValueError):
    """A run that cannot be compared: one line naming its file."""


def sample_results(run: Path) -> tuple[pd.DataFrame, dict]:
    """(per_object_results of the samples `run` played, its summary.json), read from its summary.json and report.csv."""
    # As `report merge` reads them: a hand-edited or truncated summary.json or report.csv (a layout count as text, a
    # missing column, NaN) was a traceback or compared without a word, and max_interactions 10**9 filled the memory.
    try:
        summary, report, _ = read_run(run, required=(), with_config=False)
    except MergeError as error:
        raise CompareError(str(error)) from error
    except OSError as error:
        raise CompareError(f"{run}: {error.strerror or first_line(error)}") from error
    if report.empty:  # a run stopped before its first round: a KeyError traceback
        raise CompareError(f"{run / 'report.csv'}: no result (the run played no round): nothing to compare")
    layout = SampleLayout(**summary["layout"])
    interactions = summary["max_interactions"]
    played = set(zip(report["sequence"].astype(str), report["scribble_idx"].astype(int), strict=True))
    return per_object_results(report, layout, interactions, samples=played), summary


def compare(first: Path, second: Path, top: int = 10) -> str:
    """The comparison's text (module docstring); CompareError for runs of other metrics or no common sample, and for
    one run named twice."""
    if Path(first).resolve() == Path(second).resolve():  # a typo: it printed a table of zeros
        raise CompareError(f"{first} and {second} are the same run: name two runs to compare")
    (a, summary_a), (b, summary_b) = sample_results(first), sample_results(second)
    metric, other = summary_a["metric"], summary_b["metric"]
    if metric != other:
        raise CompareError(f"{first} ({metric}) and {second} ({other}): runs of different metrics")
    column = METRIC_COLUMNS[metric]
    per = {}
    for name, results in (("a", a), ("b", b)):
        per[name] = results.groupby(["sequence", "scribble_idx", "interaction"])[column].mean().unstack("interaction")
    common = per["a"].index.intersection(per["b"].index)
    if common.empty:
        raise CompareError(f"{first} and {second} played no sample in common")
    rounds = sorted(set(per["a"].columns) & set(per["b"].columns))
    a_table, b_table = per["a"].loc[common, rounds], per["b"].loc[common, rounds]
    labels = {"a": first.name or str(first), "b": second.name or str(second)}
    width = max(12, *(len(label) for label in labels.values()))
    header = "".join(f"{f'{metric}@{r}':>8}" for r in rounds)
    lines = [f"{counted(len(common), 'sample')} in both ({labels['a']}: {len(per['a'])}, {labels['b']}: {len(per['b'])}); "
             f"{metric} per interaction, mean over them:",
             f"{'':<{width}}{header}{'mean':>8}  drops > 0.02"]
    # Runs of other interaction counts or clocks: the rounds one played beyond the other's were left out, and the
    # whole-run figures below counted on other budgets, without a word.
    notes = []
    if summary_a["max_interactions"] != summary_b["max_interactions"]:
        notes.append(f"note: {labels['a']} played up to {summary_a['max_interactions']} interactions, {labels['b']} "
                     f"{summary_b['max_interactions']}: compared on {metric}@1..{rounds[-1]}")
    if summary_a["max_time"] != summary_b["max_time"]:
        notes.append(f"note: {labels['a']} had {summary_a['max_time']:g} s per object, {labels['b']} "
                     f"{summary_b['max_time']:g} s: the whole-run figures below are on other clocks")
    lines[:0] = notes
    for name, table, results in (("a", a_table, a), ("b", b_table, b)):
        keep = results.set_index(["sequence", "scribble_idx"]).index.isin(common)
        found = drops_after_strokes(results[keep & results["interaction"].isin(rounds)], column)
        values = "".join(f"{v:8.3f}" for v in table.mean())
        lines.append(f"{labels[name]:<{width}}{values}{table.to_numpy().mean():8.3f}  "
                     f"{len(found['samples'])} of {found['rounds']}")
    difference = b_table - a_table
    whole = {name: figures_line(summary) for name, summary in (("a", summary_a), ("b", summary_b))}
    values = "".join(f"{v:+8.3f}" for v in difference.mean())
    lines.append(f"{'difference':<{width}}{values}{difference.to_numpy().mean():+8.3f}")
    lines.append(f"whole runs (their own samples and clock): {labels['a']} {whole['a']}; {labels['b']} {whole['b']}")
    last = difference[rounds[-1]].sort_values(key=abs, ascending=False).head(top)
    lines.append(f"{metric}@{rounds[-1]}, {labels['b']} - {labels['a']}, largest changes first:")
    lines += [f"  {sequence} {scribble}: {change:+.3f} ({a_table.loc[(sequence, scribble), rounds[-1]]:.3f} -> "
              f"{b_table.loc[(sequence, scribble), rounds[-1]]:.3f})" for (sequence, scribble), change in last.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m agent.report compare RUN_A RUN_B: the second run against the first, on the samples both played."""
    parser = CommandParser(prog="python -m agent.report compare", description=main.__doc__)
    parser.add_argument("first", type=path_arg, help="output directory of a session run (the baseline)")
    parser.add_argument("second", type=path_arg, help="output directory of the run compared with it")
    parser.add_argument("--top", type=int, default=10, help="samples listed by their last change (default %(default)s)")
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.exit(2, f"error: --top must be >= 0, got {args.top}\n")
    try:
        print(compare(args.first, args.second, args.top))
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
