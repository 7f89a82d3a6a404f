"""The summary recomputed from a hand-made report, the per-sequence table and the written outputs."""

import json

import pandas as pd
import pytest

from agent.evaluation.report import (
    SampleLayout,
    drops_line,
    load_report,
    main,
    per_sequence_table,
    printed_figures,
    summarize,
    write_outputs,
)


def _rows(sequence, interaction, obj, jaccards, timing):
    return [
        dict(session_id="s", sequence=sequence, scribble_idx=1, interaction=interaction, object_id=obj,
             frame=f, jaccard=j, contour=j, j_and_f=j, timing=timing)
        for f, j in enumerate(jaccards)
    ]


@pytest.fixture
def report():
    # seqA: 1 object, 2 interactions; seqB: 2 objects, only interaction 1 arrived in time.
    rows = (_rows("seqA", 1, 1, [0.4, 0.6], 2.0) + _rows("seqA", 2, 1, [0.8, 0.8], 4.0)
            + _rows("seqB", 1, 1, [0.2, 0.2], 3.0) + _rows("seqB", 1, 2, [0.4, 0.4], 3.0))
    # The framework's report holds object dtypes; mimic that.
    return pd.DataFrame(rows).astype(object)


LAYOUT = SampleLayout(num_scribbles={"seqA": 1, "seqB": 1}, num_objects={"seqA": 1, "seqB": 2})


def test_summary_matches_hand_computation(report):
    summary = summarize(report, LAYOUT, max_interactions=2, max_time=10.0, metric="J", time_threshold=3.0)
    # per-interaction means over (sequence, scribble, object): (.5+.2+.4)/3 and (.8+.2+.4)/3 (B repeats)
    assert summary["per_interaction"]["J"] == pytest.approx([1.1 / 3, 1.4 / 3], abs=1e-6)
    # time: mean per sample (A 2, B 3) then (A 4, B 0 for the missing one), cumulated; timeout 1.5 x 10
    assert summary["curve"]["time"] == pytest.approx([0.0, 2.5, 4.5, 15.0])
    area = 0.5 * 2.5 * (1.1 / 3) + 2.0 * (2.5 / 3) / 2 + 10.5 * (1.4 / 3)
    assert summary["auc"] == pytest.approx(area / 15.0)
    assert summary["metric_at_threshold"] == pytest.approx(1.1 / 3 + 0.25 * 0.1)
    assert summary["evaluated_fraction"] == pytest.approx(4 / 6)


def test_drops_after_a_new_stroke_are_counted_per_sample(report):
    # seqA rises; seqB's object 2 falls by 0.1 in round 2 (the sample's mean over objects by 0.05), then round 3
    # is late (no drop: it keeps round 2's J) and round 4 falls by 0.015 (not more than 0.02).
    rows = (_rows("seqB", 2, 1, [0.2, 0.2], 3.0) + _rows("seqB", 2, 2, [0.3, 0.3], 3.0)
            + _rows("seqB", 4, 1, [0.2, 0.2], 3.0) + _rows("seqB", 4, 2, [0.27, 0.27], 3.0))
    report = pd.concat([report, pd.DataFrame(rows).astype(object)], ignore_index=True)
    summary = summarize(report, LAYOUT, max_interactions=4, max_time=10.0)
    drops = summary["drops"]
    assert drops["rounds"] == 6 and drops["threshold"] == 0.02  # 2 samples x rounds 2..4
    assert drops["samples"] == [{"sequence": "seqB", "scribble_idx": 1, "interaction": 2, "change": pytest.approx(-0.05)}]
    assert drops_line(summary) == "J fell by more than 0.02 after a new stroke in 1 of 6 rounds: seqB 1 round 2 (-0.050)"
    assert printed_figures(summary).splitlines()[-1] == drops_line(summary)
    assert drops_line({"metric": "J", "auc": 0.5}) is None  # a summary written before the count existed
    one = {"metric": "J", "drops": {"threshold": 0.02, "rounds": 1, "samples": []}}  # 2 rounds of one sample
    assert drops_line(one) == "J fell by more than 0.02 after a new stroke in 0 of 1 round"  # "of 1 rounds"


def test_missing_sample_scores_zero(report):
    layout = SampleLayout(num_scribbles={"seqA": 1, "seqB": 1, "seqC": 2},
                          num_objects={"seqA": 1, "seqB": 2, "seqC": 1})
    summary = summarize(report, layout, max_interactions=2, max_time=10.0)
    # seqC's two samples were never played: they count as 0 in every interaction.
    assert summary["per_interaction"]["J"][0] == pytest.approx(1.1 / 5)


def test_per_sequence_table(report):
    table = per_sequence_table(report)
    assert list(table.columns) == ["J@1", "J@2"]
    assert table.loc[("seqA", 1), "J@1"] == pytest.approx(0.5)
    assert table.loc[("seqB", 1), "J@1"] == pytest.approx(0.3)
    assert pd.isna(table.loc[("seqB", 1), "J@2"])


def test_write_outputs_round_trip(report, tmp_path):
    summary = summarize(report, LAYOUT, max_interactions=2, max_time=10.0)
    paths = write_outputs(tmp_path, report, {**summary, "framework": {"auc": summary["auc"]}}, "test")
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    again = summarize(load_report(paths["report"]), LAYOUT, max_interactions=2, max_time=10.0)
    assert again["auc"] == pytest.approx(summary["auc"])
    assert json.loads(paths["summary"].read_text())["framework"]["auc"] == pytest.approx(summary["auc"])


def test_compare_runs_plot_and_missing_run(report, tmp_path, capsys):
    summary = summarize(report, LAYOUT, max_interactions=2, max_time=10.0)
    for name in ("a", "b"):
        write_outputs(tmp_path / name, report, summary, name)
    output = tmp_path / "both.png"
    assert main([str(tmp_path / "a") + "=first", str(tmp_path / "b"), "--output", str(output)]) == 0
    assert output.stat().st_size > 0
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), "--output", str(output)])
    assert exit_info.value.code == 2 and "summary.json does not exist" in capsys.readouterr().err
    # two runs of the same folder name (or one run twice): one curve replaced the other without a word
    (tmp_path / "other").mkdir()
    write_outputs(tmp_path / "other" / "a", report, summary, "a")
    for runs in ([tmp_path / "a", tmp_path / "other" / "a"], [tmp_path / "a", str(tmp_path / "b") + "=a"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*map(str, runs), "--output", str(tmp_path / "twice.png")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "its label 'a' is an earlier run's too" in err
    assert not (tmp_path / "twice.png").exists()
    assert main([str(tmp_path / "a"), str(tmp_path / "other" / "a") + "=a2", "--output", str(output)]) == 0
    # A run folder named after a --set (`crf.iterations=10`) was read as `crf.iterations` labelled `10`.
    write_outputs(tmp_path / "crf.iterations=10", report, summary, "x")
    capsys.readouterr()
    assert main([str(tmp_path / "crf.iterations=10"), str(tmp_path / "crf.iterations=10") + "=ten=x",
                 str(tmp_path / "a") + "=lr=5", "--output", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out


def test_a_plot_the_disk_cannot_hold_leaves_the_earlier_one(report, tmp_path, capsys):
    import resource

    summary = summarize(report, LAYOUT, max_interactions=2, max_time=10.0)
    write_outputs(tmp_path / "a", report, summary, "a")
    output = tmp_path / "curves.png"
    output.write_bytes(b"an earlier plot")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # as `ulimit -f`: the PNG passes it (EFBIG)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path / "a"), "--output", str(output)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    # It was "error: a path: File too large", and a truncated PNG had replaced the earlier plot.
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {output}: cannot write it (File too large)\n"
    assert output.read_bytes() == b"an earlier plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "curves.png"]  # no temporary file either


def test_help_describes_every_flag(capsys):
    from tests.conftest import bare_flags

    with pytest.raises(SystemExit):
        main(["--help"])
    assert bare_flags(capsys.readouterr().out) == []  # --title had no help


def test_runs_of_different_metrics_are_refused(report, tmp_path, capsys):
    # One run scored F and one J were drawn on one axis labelled with the first run's metric.
    for name, metric in (("a", "J"), ("b", "F"), ("c", "J")):
        write_outputs(tmp_path / name, report, summarize(report, LAYOUT, 2, 10.0, metric), name)
    output = tmp_path / "curves.png"
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), "--output", str(output)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert f"{tmp_path / 'a'} (J), {tmp_path / 'b'} (F)" in err and "different metrics" in err
    assert not output.exists()
    assert main([str(tmp_path / "a"), str(tmp_path / "c"), "--output", str(output)]) == 0


def test_a_runs_own_curve_is_not_an_output(report, tmp_path, capsys):
    # `--output RUN/curve.png` replaced that run's own curve with the comparison plot, without a word.
    summary = summarize(report, LAYOUT, max_interactions=2, max_time=10.0)
    for name in ("a", "b"):
        write_outputs(tmp_path / name, report, summary, name)
    before = (tmp_path / "a" / "curve.png").read_bytes()
    for output in (tmp_path / "a" / "curve.png", tmp_path / "b" / ".." / "a" / "curve.png"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(output)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1
        assert err.startswith(f"error: --output {output}: it is the curve of the run in ")
    assert (tmp_path / "a" / "curve.png").read_bytes() == before
    assert main([str(tmp_path / "a"), "--output", str(tmp_path / "a" / "compare.png")]) == 0
