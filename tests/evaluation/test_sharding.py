"""Sharded evaluation: a deterministic split into whole sequences, and merged shards equal one run."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from agent.config import SessionConfig
from agent.data.davis import SequenceInfo
from agent.data.registry import restore
from agent.evaluation.baseline import ScribblePaintBaseline
from agent.evaluation.report import load_report
from agent.evaluation.report import main as report_main
from agent.evaluation.session import run_session
from agent.evaluation.sharding import assign_shards, merge_runs, shard_sequences
from strategies import get_strategy

from .conftest import StopsOnTheSecondVideo

INTERACTIONS = 3
SUMMARY_KEYS = ("auc", "metric_at_threshold", "threshold", "curve", "per_interaction", "evaluated_fraction",
                "metric", "interrupted")


@pytest.fixture(autouse=True)
def _restore_registry():
    yield
    restore()


def _infos(costs: dict[str, int]) -> dict[str, SequenceInfo]:
    return {name: SequenceInfo(name, frames, 1, 10, 10, 1) for name, frames in costs.items()}


def test_split_is_deterministic_disjoint_and_balanced():
    infos = _infos({"a": 90, "b": 50, "c": 40, "d": 30, "e": 20, "f": 10})
    assignment = assign_shards(infos, 3)
    shuffled = dict(random.Random(1).sample(sorted(infos.items()), len(infos)))
    assert assign_shards(shuffled, 3) == assignment  # the order the sequences come in does not matter
    parts = [shard_sequences(infos, k, 3) for k in (1, 2, 3)]
    assert sorted(name for part in parts for name in part) == sorted(infos)
    loads = [sum(infos[n].num_frames for n in part) for part in parts]
    assert loads == [90, 80, 70]  # costliest first, each to the least loaded shard
    assert parts[1] == ["b", "e", "f"] and parts[2] == ["c", "d"]  # in the given order


def test_too_many_shards_is_one_clear_error():
    with pytest.raises(ValueError, match="shard 3/3 has no sequence: there are only 2"):
        shard_sequences(_infos({"a": 5, "b": 5}), 3, 3)
    # Shard 1 of them has a sequence, but the split could never be merged; a huge N was a MemoryError.
    for count in (3, 99_999_999_999):
        with pytest.raises(ValueError, match=f"shard 1/{count}: shard 3/{count} would have no sequence: there are "
                                             "only 2 sequence.*use at most 2 shards"):
            shard_sequences(_infos({"a": 5, "b": 5}), 1, count)


def _run(root, output_dir, shard=None, predictor=None):
    config = SessionConfig(subset="val", davis_root=root, max_interactions=INTERACTIONS, max_time=60.0,
                           output_dir=output_dir, strategy="no-finetune", shard=shard)
    run_session(config, predictor or ScribblePaintBaseline(), get_strategy("no-finetune"))
    return output_dir


def test_merged_shards_equal_one_run(tiny_synthetic_root, tmp_path, fixed_timing, capsys):
    """Same predictions (the deterministic baseline) and timings (fixed_timing): shards merged = one run."""
    whole = _run(tiny_synthetic_root, tmp_path / "whole")
    shards = [_run(tiny_synthetic_root, tmp_path / f"shard{k}", f"{k}/2") for k in (1, 2)]
    parts = [set(load_report(d / "report.csv")["sequence"]) for d in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1]

    merged = tmp_path / "merged"
    assert report_main(["merge", *map(str, reversed(shards)), "--output", str(merged)]) == 0
    assert "AUC-J:" in capsys.readouterr().out
    ours, one = (json.loads((d / "summary.json").read_text()) for d in (merged, whole))
    for key in SUMMARY_KEYS:
        assert ours[key] == one[key], key
    assert ours["auc"] > 0 and ours["evaluated_fraction"] == 1.0
    assert (ours["rounds_played"], ours["rounds_late"]) == (one["rounds_played"], 0) and one["rounds_played"] > 0
    assert ours["layout"] == one["layout"] and ours["merged_from"] == [str(d) for d in reversed(shards)]
    assert (merged / "per_sequence.csv").read_text() == (whole / "per_sequence.csv").read_text()
    assert (merged / "curve.png").is_file()
    assert json.loads((merged / "config.json").read_text())["session"]["shard"] is None
    # The framework's own summary of the one run agrees too (it is not computed for a merge).
    assert ours["auc"] == pytest.approx(one["framework"]["auc"], abs=1e-12)


def test_a_merge_lists_the_sequences_its_shards_left_out(tiny_synthetic_root, tmp_path, fixed_timing):
    """With --skip-bad-sequences, one run's summary names the sequences it left out; a merge of its shards named
    none (no `skipped_sequences`), as if the whole subset had been evaluated."""
    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    (root / "JPEGImages" / "480p" / "synth-002" / "00003.jpg").write_bytes(b"x")
    runs = {}
    for name, shard in (("whole", None), ("shard1", "1/2"), ("shard2", "2/2")):
        config = SessionConfig(subset="val", davis_root=root, max_interactions=1, max_time=60.0,
                               output_dir=tmp_path / name, strategy="no-finetune", shard=shard, skip_bad_sequences=True)
        run_session(config, ScribblePaintBaseline(), get_strategy("no-finetune"))
        runs[name] = tmp_path / name
    merge_runs([runs["shard1"], runs["shard2"]], tmp_path / "merged")
    one, ours = (json.loads((d / "summary.json").read_text()) for d in (runs["whole"], tmp_path / "merged"))
    assert list(one["skipped_sequences"]) == ["synth-002"] and "00003.jpg" in one["skipped_sequences"]["synth-002"]
    assert ours["skipped_sequences"] == one["skipped_sequences"] and ours["sequences"] == one["sequences"]


def test_a_merge_of_an_interrupted_shard_has_no_auc_over_its_unplayed_samples(tiny_synthetic_root, tmp_path,
                                                                              fixed_timing, capsys):
    """It was published with an AUC counting the unplayed samples as J = 0, exit 0, while the shard's own summary
    had none: now as any interrupted run, `auc` null and the figures over the samples played apart."""
    def interrupt(frames):
        raise KeyboardInterrupt

    first = _run(tiny_synthetic_root, tmp_path / "shard1", "1/2")
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_synthetic_root, tmp_path / "shard2", "2/2", StopsOnTheSecondVideo(interrupt))
    assert json.loads((tmp_path / "shard2" / "summary.json").read_text())["auc"] is None
    merged = tmp_path / "merged"
    assert report_main(["merge", str(first), str(tmp_path / "shard2"), "--output", str(merged)]) == 0
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["auc"] is None and summary["metric_at_threshold"] is None and summary["interrupted"] is True
    assert summary["complete"] is False and summary["samples_played"] < summary["samples_total"]
    assert 0 < summary["auc_partial"] <= 1
    assert capsys.readouterr().out.startswith(f"incomplete run ({summary['samples_played']} of "
                                              f"{summary['samples_total']} samples): partial AUC-J ")


def _fake_run(directory, sequences, shard, **changes):
    """A run directory as a session writes it, without playing: merge checks it before reading results."""
    directory.mkdir(parents=True)
    summary = {"metric": "J", "threshold": 60.0, "max_interactions": INTERACTIONS, "max_time": 60.0,
               "predictor": "baseline", "strategy": "no-finetune", "shard": shard, "interrupted": False,
               "layout": {"num_scribbles": dict.fromkeys(sequences, 1), "num_objects": dict.fromkeys(sequences, 1)}}
    (directory / "summary.json").write_text(json.dumps({**summary, **changes}))
    (directory / "report.csv").write_text(",session_id,sequence,scribble_idx,interaction,object_id,frame,jaccard,"
                                          "contour,j_and_f,timing\n")
    return directory


def test_merge_refuses_what_is_not_one_evaluation(tmp_path, capsys):
    first = _fake_run(tmp_path / "shard1", ["a"], "1/2")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["merge", str(first), "--output", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: shard(s) 2/2 missing: a merge of part of the shards is not the " \
                                      "evaluation's result\n"
    huge = _fake_run(tmp_path / "huge", ["a"], "1/99999999999")  # a hand-made summary: a set of 10^11 before
    with pytest.raises(ValueError, match=r"shard\(s\) 2/99999999999, .*, 11/99999999999, \.\.\. missing"):
        merge_runs([huge], tmp_path / "merged")
    cases = {
        "given more than once": [first, first],
        "not a shard, and the other runs are": [first, _fake_run(tmp_path / "whole", ["b"], None)],
        "shards of different splits": [first, _fake_run(tmp_path / "third", ["b"], "2/3")],
        "differ in max_time": [first, _fake_run(tmp_path / "slow", ["b"], "2/2", max_time=30.0)],
        "sequence a is in both": [_fake_run(tmp_path / d, ["a"], None) for d in ("x", "y")],
        "has no sample layout": [_fake_run(tmp_path / "old", ["a"], None)],
    }
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"metric": "J"}))  # written before sharding
    for message, runs in cases.items():
        with pytest.raises(ValueError, match=message):
            merge_runs(runs, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def _merge_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        report_main(["merge", *map(str, args)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_merge_names_the_malformed_file_and_never_writes_over_results(tmp_path, capsys):
    bad_json = _fake_run(tmp_path / "badjson", ["a"], None)
    (bad_json / "summary.json").write_text("{not json")
    assert f"{bad_json / 'summary.json'}: not valid JSON" in _merge_error(capsys, bad_json, "--output", tmp_path / "m")
    bad_csv = _fake_run(tmp_path / "badcsv", ["a"], None)
    (bad_csv / "report.csv").write_bytes(b"\xff\xfe\x00garbage\n\"unclosed")
    assert f"{bad_csv / 'report.csv'}: not a session run's report.csv" in _merge_error(
        capsys, bad_csv, "--output", tmp_path / "m")
    good = _fake_run(tmp_path / "good", ["a"], None)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert "exists and is not empty" in _merge_error(capsys, good, "--output", kept)
    # --overwrite may replace an earlier merge, never one of the runs it reads
    assert "would replace the run's input" in _merge_error(capsys, good, "--output", good, "--overwrite")
    assert (kept / "notes.txt").read_text() == "mine" and not (tmp_path / "m").exists()


def test_a_merge_whose_files_cannot_all_be_written_is_not_published(tmp_path, capsys, caplog, monkeypatch):
    # A full disk: the merge was published without its report.csv over an earlier merge, and exited 0.
    from agent.evaluation import outputs

    run = _fake_run(tmp_path / "run", ["a"], None)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "summary.json").write_text("an earlier merge")
    atomic_path = outputs.atomic_path

    def full_for_csv(path):
        if Path(path).name == "report.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_path(path)

    monkeypatch.setattr("agent.evaluation.report.atomic_path", full_for_csv)
    caplog.set_level("ERROR")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["merge", str(run), "--output", str(merged), "--overwrite"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "report.csv: could not be written (No space left on device); the incomplete merge is in" in err, err
    assert out.startswith("AUC-J: 0.000\nJ@60s: 0.000\n")  # the completed merge's figures all the same (none)
    assert "could not write" not in caplog.text  # the one fault was told twice: a log line, then the error line
    assert sorted(p.name for p in merged.iterdir()) == ["summary.json"]
    assert (merged / "summary.json").read_text() == "an earlier merge"


def test_plot_refuses_what_it_cannot_draw_or_write(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", ["a"], None)
    (tmp_path / "file").write_text("x")
    for args, message in (
            ([run, "--output", tmp_path / "curves.txt"], "name the image file"),
            ([run, "--output", tmp_path], "is a directory"),
            ([run, "--output", tmp_path / "file" / "c.png"], "cannot be written below it"),
            ([run, "--output", tmp_path / "c.png"], "not a session run's summary.json")):
        (run / "summary.json").write_text(json.dumps([1]))
        with pytest.raises(SystemExit) as exit_info:
            report_main([str(a) for a in args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "c.png").exists()


def test_merge_names_a_malformed_shard_or_a_nan_result(tmp_path, capsys):
    second = _fake_run(tmp_path / "shard2", ["b"], "2/2")
    bad_shard = _fake_run(tmp_path / "badshard", ["a"], "x/y")
    assert _merge_error(capsys, bad_shard, second, "--output", tmp_path / "m") == \
        f"error: {bad_shard / 'summary.json'}: shard 'x/y' is not K/N with 1 <= K <= N\n"
    nan = _fake_run(tmp_path / "nan", ["a"], "1/2")
    with open(nan / "report.csv", "a") as report:  # a NaN would be averaged into the merged AUC silently
        report.write("0,s,a,1,1,1,0,nan,0.5,0.5,1.0\n")
    assert _merge_error(capsys, nan, second, "--output", tmp_path / "m") == \
        f"error: {nan / 'report.csv'}: row 0 has jaccard nan, not a finite number\n"
    bad_layout = _fake_run(tmp_path / "badlayout", ["a"], "1/2", layout={"num_scribbles": [1]})
    assert "its layout is not num_scribbles and num_objects" in _merge_error(
        capsys, bad_layout, second, "--output", tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"max_interactions": "3"}, "max_interactions is '3', not an integer in 1..16"),
    ({"max_time": None}, "max_time is None, not a number of seconds in (0, 600]"),
    ({"metric": "X"}, "metric is 'X', not one of J, F, J_AND_F"),
    ({"threshold": "60"}, "threshold is '60', not a number of seconds >= 0"),  # published, then a traceback
    ({"layout": {"num_scribbles": {"a": 1.5}, "num_objects": {"a": 1}}}, "num_scribbles of a is 1.5, not an integer"),
    # No figures: the merge was published, then printing its AUC (None) was a TypeError.
    ({"layout": {"num_scribbles": {}, "num_objects": {}}}, "its layout names no sequence"),
    # Counted once every check had passed: int("x") and int(None) were tracebacks.
    ({"rounds_late": "x"}, "rounds_late is 'x', not an integer >= 0"),
    ({"rounds_late": 0, "rounds_played": None}, "rounds_played is None, not an integer >= 0"),
    # Hand-edited: a metric of another type was "unhashable type: 'list'", a skipped_sequences text or list an
    # AttributeError; "interrupted": "false" made the merge's figures partial, an interrupted run's.
    ({"metric": ["J"]}, "metric is ['J'], not one of J, F, J_AND_F"),
    ({"interrupted": "false"}, "interrupted is 'false', not true or false"),
    ({"complete": 1}, "complete is 1, not true or false"),
    ({"skipped_sequences": "b"}, "skipped_sequences is 'b', not a mapping of sequence names"),
    ({"skipped_sequences": ["b"]}, "skipped_sequences is ['b'], not a mapping"),
], ids=["interactions-text", "time-null", "metric", "threshold-text", "scribbles-float", "layout-empty",
        "rounds-late-text", "rounds-played-null", "metric-list", "interrupted-text", "complete-int", "skipped-text",
        "skipped-list"])
def test_merge_names_a_summary_value_a_session_never_writes(tmp_path, capsys, changes, fragment):
    """Each was a traceback (TypeError, KeyError) instead of one line."""
    run = _fake_run(tmp_path / "run", ["a"], None, **changes)
    assert fragment in _merge_error(capsys, run, "--output", tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("row", "fragment"), [
    ("0,s,b,1,1,1,0,0.9,0.9,0.9,1.0", "row 0 (sequence b, scribble_idx 1, object_id 1, interaction 1)"),
    ("0,s,a,1,7,1,0,0.9,0.9,0.9,1.0", "interaction 7) is not a sample"),
    ("0,s,a,2,1,1,0,0.9,0.9,0.9,1.0", "scribble_idx 2,"),
    ("0,s,a,1,1,2,0,0.9,0.9,0.9,1.0", "object_id 2,"),
], ids=["other-sequence", "interaction-beyond", "scribble-beyond", "object-beyond"])
def test_merge_refuses_a_report_row_outside_its_layout(tmp_path, capsys, row, fragment):
    """Another run's report.csv next to this summary.json: its rows were left out without a word and the
    layout's samples counted as never played (AUC 0.000)."""
    run = _fake_run(tmp_path / "run", ["a"], None)
    with open(run / "report.csv", "a") as report:
        report.write(row + "\n")
    err = _merge_error(capsys, run, "--output", tmp_path / "m")
    assert fragment in err and "the report of another run?" in err
    (run / "report.csv").write_text(",sequence,scribble_idx\n0,a,1\n")
    assert "no object_id, interaction, jaccard, contour, j_and_f, timing column" in _merge_error(
        capsys, run, "--output", tmp_path / "m")  # a KeyError traceback
    assert not (tmp_path / "m").exists()


def test_a_fifo_for_a_runs_file_is_named(tmp_path, capsys):
    """A FIFO where summary.json or report.csv belongs is named as one (reading it would wait forever)."""
    run = _fake_run(tmp_path / "run", ["a"], None)
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(run), "--output", str(tmp_path / "c.png")])
    assert exit_info.value.code == 2 and "summary.json is a FIFO (named pipe), not a file" in capsys.readouterr().err
    assert "is a FIFO (named pipe), not a file" in _merge_error(capsys, run, "--output", tmp_path / "m")



def test_a_run_still_going_or_killed_before_its_summary_is_named_so(tmp_path, capsys):
    """A session run's folder without its summary.json (written last) was "summary.json does not exist (pass the
    output directories of session runs)", of one."""
    from agent.paths import lock_folder, unlock_folder

    done = _fake_run(tmp_path / "done", ["a"], "1/2")
    going = tmp_path / "going"
    going.mkdir()
    (going / "config.json").write_text("{}")  # the runner writes it first, the summary last
    (going / "interactions.jsonl").write_text("")
    lock = lock_folder(going)  # as a session holds its output folder until it completes
    try:
        err = _merge_error(capsys, done, going, "--output", tmp_path / "m")
    finally:
        unlock_folder(lock)
    assert err == f"error: {going}: a run is still writing there (no summary.json yet): pass it once the run completes\n"
    err = _merge_error(capsys, done, going, "--output", tmp_path / "m")
    assert f"{going / 'summary.json'} does not exist: the run there stopped before writing its summary" in err
    assert "pass the output directories of session runs" not in err and not (tmp_path / "m").exists()

def test_merge_refuses_runs_of_other_settings_or_data_and_ignores_what_a_machine_sets(tmp_path, capsys):
    # Shard 1 of one experiment and shard 2 of another (a --set, another checkpoint or dataset) were published
    # as one evaluation.
    def run(name, shard, dataset="/data/DAVIS", **agent):
        directory = _fake_run(tmp_path / name, [name], shard, dataset=dataset)
        config = {"session": {"subset": "val", "davis_root": str(Path(dataset)), "output_dir": str(directory),
                              "shard": shard},
                  "agent": {"checkpoint": None, "device": "auto", "crf": {"iterations": 5, "workers": 0}, **agent}}
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    first = run("a", "1/2")
    for other, message in (
            (run("b", "2/2", crf={"iterations": 3, "workers": 0}), "differ in agent.crf.iterations (5 and 3)"),
            (run("c", "2/2", checkpoint="runs/other/model.pt"), 'differ in agent.checkpoint ("default.pt" and '
                                                                '"model.pt")'),
            (run("d", "2/2", dataset="/root/.cache/simlearn-ivos/synthetic-2b63dd8dda"),
             'differ in dataset ("DAVIS" and "synthetic-2b63dd8dda")')):
        assert f"{first} and {other} {message}: they are not one evaluation" in _merge_error(
            capsys, first, other, "--output", tmp_path / "m")
    # Another place for the same dataset, another device or CRF process count: one evaluation.
    same = run("e", "2/2", dataset="/scratch/node2/DAVIS", device="cpu", crf={"iterations": 5, "workers": 2})
    assert report_main(["merge", str(first), str(same), "--output", str(tmp_path / "m")]) == 0
    # A shard of this version (its config.json marked as a run's resolved config) and one of an older version
    # (without the marker): one evaluation (the marker is no setting).
    marked = run("f", "2/2")
    config = json.loads((marked / "config.json").read_text())
    (marked / "config.json").write_text(json.dumps({"resolved": True, **config}))
    assert report_main(["merge", str(first), str(marked), "--output", str(tmp_path / "m2")]) == 0
