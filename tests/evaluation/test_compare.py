"""agent.evaluation.compare: two runs side by side on the samples both played, as their summaries count them."""

from pathlib import Path

import pandas as pd

from agent.evaluation.compare import compare
from agent.evaluation.report import SampleLayout, main, summarize, write_outputs


def _rows(sequence, interaction, obj, jaccard):
    return [dict(session_id="s", sequence=sequence, scribble_idx=1, interaction=interaction, object_id=obj, frame=f,
                 jaccard=jaccard, contour=jaccard, j_and_f=jaccard, timing=2.0) for f in range(2)]


def _run(path: Path, values: dict[str, list[float | None]], interactions: int = 3, max_time: float = 60.0) -> Path:
    """A run's results: per sequence (one object, scribble 1) the J of each interaction, None for a late one."""
    rows = [row for sequence, js in values.items() for i, j in enumerate(js, 1) if j is not None
            for row in _rows(sequence, i, 1, j)]
    report = pd.DataFrame(rows).astype(object)
    layout = SampleLayout(num_scribbles=dict.fromkeys(values, 1), num_objects=dict.fromkeys(values, 1))
    summary = summarize(report, layout, max_interactions=interactions, max_time=max_time)
    write_outputs(path, report, summary, "test", {"layout": {"num_scribbles": layout.num_scribbles,
                                                             "num_objects": layout.num_objects},
                                                  "max_interactions": interactions, "max_time": max_time})
    return path


def test_common_samples_per_interaction_drops_and_largest_changes(tmp_path: Path) -> None:
    a = _run(tmp_path / "base", {"dog": [0.5, 0.8, 0.7], "cat": [0.4, 0.6, 0.6], "owl": [0.9, 0.9, 0.9]})
    b = _run(tmp_path / "new", {"dog": [0.5, 0.8, 0.85], "cat": [0.4, None, 0.5]})  # cat's round 2 late
    lines = compare(a, b).splitlines()
    assert lines[0].startswith("2 samples in both (base: 3, new: 2)")
    assert lines[2].split() == ["base", "0.450", "0.700", "0.650", "0.600", "1", "of", "4"]  # dog's round 3
    # cat's late round 2 keeps round 1's 0.4 (as the summary counts it); its round 3 (0.5) is then no drop
    assert lines[3].split() == ["new", "0.450", "0.600", "0.675", "0.575", "0", "of", "4"]
    assert lines[4].split() == ["difference", "+0.000", "-0.100", "+0.025", "-0.025"]
    assert lines[5].startswith("whole runs (their own samples and clock): base AUC-J ")
    assert lines[-2:] == ["  dog 1: +0.150 (0.700 -> 0.850)", "  cat 1: -0.100 (0.600 -> 0.500)"]


def test_one_common_sample_is_counted_as_one(tmp_path: Path) -> None:
    # An interrupted run against a whole one: "1 samples in both (base: 2, new: 1)".
    a = _run(tmp_path / "base", {"dog": [0.5, 0.8, 0.7], "cat": [0.4, 0.6, 0.6]})
    b = _run(tmp_path / "new", {"dog": [0.5, 0.8, 0.85]})
    assert compare(a, b).splitlines()[0].startswith("1 sample in both (base: 2, new: 1); ")


def test_runs_without_a_common_sample_or_results_are_one_line(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a", {"dog": [0.5, 0.6, 0.7]})
    b = _run(tmp_path / "b", {"cat": [0.5, 0.6, 0.7]})
    assert main(["compare", str(a), str(b)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {a} and {b} played no sample in common"]
    (b / "report.csv").unlink()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {b / 'report.csv'} does not exist (pass the output directories of session runs)"], err
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "x" / ".." / "a")]) == 2  # one run twice: a table of zeros
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {a} and {tmp_path / 'x' / '..' / 'a'} are the same run: name two runs to compare"]


def _edited(run: Path, where: Path, summary: dict | None = None, report=None) -> Path:
    import json
    import shutil

    shutil.copytree(run, where)
    if summary is not None:
        (where / "summary.json").write_text(json.dumps({**json.loads((where / "summary.json").read_text()), **summary}))
    if report is not None:
        (where / "report.csv").write_text(report((where / "report.csv").read_text()))
    return where


def test_a_hand_edited_or_truncated_run_is_one_line_as_in_merge(tmp_path: Path, capsys) -> None:
    """compare read a run's files unchecked: a layout count as text, max_interactions 0, a metric of another type or a
    report.csv without a column were tracebacks; a truncated report.csv (a last row cut short, NaN) or a scribble index
    1.5 was compared without a word; max_interactions 10**9 filled the memory until the process was killed."""
    a = _run(tmp_path / "a", {"dog": [0.5, 0.6, 0.7], "cat": [0.4, 0.5, 0.6]})

    def drop(column):
        def edit(text):
            frame = pd.read_csv(__import__("io").StringIO(text), index_col=0)
            return frame.drop(columns=[column]).to_csv()
        return edit

    cases = {
        "layout-text": ({"layout": {"num_scribbles": {"dog": "1", "cat": 1}, "num_objects": {"dog": 1, "cat": 1}}},
                        None, "layout num_scribbles of dog is '1', not an integer >= 1"),
        "interactions-0": ({"max_interactions": 0}, None, "max_interactions is 0, not an integer in 1..16"),
        "interactions-huge": ({"max_interactions": 10**9}, None, "max_interactions is 1000000000, not an integer"),
        "metric-list": ({"metric": ["J"]}, None, "metric is ['J'], not one of J, F, J_AND_F"),
        "no-jaccard": (None, drop("jaccard"), "no jaccard column (not a session run's report.csv)"),
        "no-interaction": (None, drop("interaction"), "no interaction column"),
        "truncated": (None, lambda text: text[:-30], "nan, not a finite number"),
        "scribble-1.5": (None, lambda text: text.replace(",dog,1,", ",dog,1.5,", 1), "scribble_idx 1.5"),
        "header-only": (None, lambda text: text.splitlines()[0] + "\n", "no result (the run played no round)"),
    }
    for name, (summary, report, fragment) in cases.items():
        run = _edited(a, tmp_path / name, summary, report)
        assert main(["compare", str(a), str(run)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], (name, err)
    assert main(["compare", str(a), str(tmp_path / "metric-list" / "summary.json")]) == 2  # a file, not a run
    assert "summary.json/summary.json" in capsys.readouterr().err


def test_runs_of_other_interaction_counts_or_clocks_say_so(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {"dog": [0.5, 0.8, 0.7]})
    b = _run(tmp_path / "b", {"dog": [0.5, 0.9]}, interactions=2, max_time=30.0)
    lines = compare(a, b).splitlines()
    # a's J@3 was left out, and the whole-run figures were on other budgets, without a word.
    assert lines[:2] == ["note: a played up to 3 interactions, b 2: compared on J@1..2",
                         "note: a had 60 s per object, b 30 s: the whole-run figures below are on other clocks"]
    assert not any(line.startswith("note:") for line in compare(a, _run(tmp_path / "c", {"dog": [0.4] * 3})).splitlines())
