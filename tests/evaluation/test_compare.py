"""agent.evaluation.compare: two runs side by side on the samples both played, as their summaries count them."""

from pathlib import Path

import pandas as pd

from agent.evaluation.compare import compare
from agent.evaluation.report import SampleLayout, main, summarize, write_outputs


def _rows(sequence, interaction, obj, jaccard):
    return [dict(session_id="s", sequence=sequence, scribble_idx=1, interaction=interaction, object_id=obj, frame=f,
                 jaccard=jaccard, contour=jaccard, j_and_f=jaccard, timing=2.0) for f in range(2)]


def _run(path: Path, values: dict[str, list[float | None]]) -> Path:
    """A run's results: per sequence (one object, scribble 1) the J of each interaction, None for a late one."""
    rows = [row for sequence, js in values.items() for i, j in enumerate(js, 1) if j is not None
            for row in _rows(sequence, i, 1, j)]
    report = pd.DataFrame(rows).astype(object)
    layout = SampleLayout(num_scribbles=dict.fromkeys(values, 1), num_objects=dict.fromkeys(values, 1))
    summary = summarize(report, layout, max_interactions=3, max_time=60.0)
    write_outputs(path, report, summary, "test", {"layout": {"num_scribbles": layout.num_scribbles,
                                                             "num_objects": layout.num_objects},
                                                  "max_interactions": 3})
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


def test_runs_without_a_common_sample_or_results_are_one_line(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a", {"dog": [0.5, 0.6, 0.7]})
    b = _run(tmp_path / "b", {"cat": [0.5, 0.6, 0.7]})
    assert main(["compare", str(a), str(b)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {a} and {b} played no sample in common"]
    (b / "report.csv").unlink()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {b}: not a session run's results"), err
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "summary.json" in capsys.readouterr().err
