"""Results on disk: atomic files, output directories never silently overwritten, summaries of partial runs."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from agent.evaluation import report as report_module
from agent.evaluation.outputs import (
    OutputDirError,
    PublishError,
    atomic_path,
    atomic_write_text,
    discard,
    prepare_output_dir,
    publish,
    unused_dir,
)
from agent.evaluation.report import SampleLayout, figures_line, summarize, summarize_run, write_outputs


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o044  # readable like any file, not mkstemp's 0600


def test_output_dir_new_empty_or_refused(tmp_path: Path) -> None:
    fresh = prepare_output_dir(tmp_path / "a" / "b")
    assert fresh.work == fresh.final and fresh.final.is_dir() and fresh.created
    discard(fresh)  # a run that failed before writing anything leaves no folder
    assert not fresh.final.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_output_dir(empty).work == empty
    (empty / "summary.json").write_text("{}")
    with pytest.raises(OutputDirError, match="exists and is not empty.*--overwrite"):
        prepare_output_dir(empty)
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    with pytest.raises(OutputDirError, match="is a link that leads nowhere"):  # it was "is a file"
        prepare_output_dir(tmp_path / "loop-a")


def test_a_run_that_wrote_only_empty_folders_leaves_no_trace(tmp_path: Path) -> None:
    # The framework's session makes `framework/` when it opens: a server refusing the session left it, which
    # refused the next run ("exists and is not empty") and was announced as "results so far".
    for target in (prepare_output_dir(tmp_path / "new"), prepare_output_dir(tmp_path / "given")):
        (target.work / "framework" / "deeper").mkdir(parents=True)
        discard(target)
    assert not (tmp_path / "new").exists()
    given = tmp_path / "given"
    given.mkdir(exist_ok=True)
    kept = prepare_output_dir(given)  # the user's empty folder stays, emptied again
    (kept.work / "framework").mkdir()
    discard(kept)
    assert given.is_dir() and not any(given.iterdir())
    written = prepare_output_dir(tmp_path / "written")
    (written.work / "framework").mkdir()
    (written.work / "framework" / "result.tmp.csv").write_text("x")
    discard(written)  # a file is a result: kept
    assert (written.work / "framework" / "result.tmp.csv").is_file()


def test_overwrite_stages_and_publishes_only_on_completion(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("earlier")
    target = prepare_output_dir(out, overwrite=True)
    assert target.staged and target.work.parent == tmp_path and (out / "summary.json").read_text() == "earlier"
    (target.work / "summary.json").write_text("new")
    assert publish(target) == out
    assert (out / "summary.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_run_that_cannot_be_moved_into_place_says_where_its_results_are(tmp_path: Path, monkeypatch) -> None:
    """publish's OSError (a full disk, the folder made read-only meanwhile) was a traceback that did not say where
    the finished results were; the earlier results are put back, or named where they lie."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("earlier")
    target = prepare_output_dir(out, overwrite=True)
    (target.work / "summary.json").write_text("new")
    replace = os.replace

    def refusing(src, dst):  # the new results' move in
        if Path(src) == target.work:
            raise OSError(errno.EROFS, "Read-only file system", str(src))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refusing)
    with pytest.raises(PublishError, match=re.escape(f"{out}: cannot put this run's results there (Read-only file "
                                                     f"system); the finished results are in {target.work} ({out} is "
                                                     "as it was)")):
        publish(target)
    assert (out / "summary.json").read_text() == "earlier" and (target.work / "summary.json").read_text() == "new"

    def only_moved_aside(src, dst):  # the earlier results moved aside, then neither move in is allowed
        if Path(src) != out:
            raise OSError(errno.EROFS, "Read-only file system", str(src))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", only_moved_aside)
    with pytest.raises(PublishError, match=r"the earlier results are in .*out\.old-"):
        publish(dataclasses.replace(target, lock=None))  # its lock went with the first try
    assert (target.work / "summary.json").read_text() == "new"
    assert next(tmp_path.glob("out.old-*")).joinpath("summary.json").read_text() == "earlier"


def test_overwrite_of_a_mount_point_is_refused_before_the_run(tmp_path: Path, monkeypatch) -> None:
    """A container's volume (`-v ~/results:/results`, `--output-dir /results --overwrite`) cannot be renamed: the
    whole run was played, then publishing it was an OSError traceback ("Device or resource busy"), its results left
    in a sibling folder. Tests cannot mount: the mount point is simulated."""
    import os

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("earlier")
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out or ismount(path))
    with pytest.raises(OutputDirError, match=r"out: is a mount point, which --overwrite cannot replace .*: pass a "
                                             r"folder inside it as --output-dir"):
        prepare_output_dir(out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged beside it
    assert prepare_output_dir(out / "run1", overwrite=True).final == out / "run1"


@pytest.mark.parametrize("name", ["out/.", "out/sub/.."])
def test_overwrite_of_a_folder_named_by_dots_publishes(tmp_path: Path, monkeypatch, name: str) -> None:
    """`--output-dir out/sub/.. --overwrite` ran the whole session, then publishing was a ValueError traceback ("has
    an empty name"), its results in a hidden `.new-` folder inside the old one."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "summary.json").write_text("earlier")
    monkeypatch.chdir(tmp_path)
    target = prepare_output_dir(Path(name), overwrite=True)
    assert target.work.parent == tmp_path
    (target.work / "summary.json").write_text("new")
    assert publish(target) == out
    assert (out / "summary.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("name", [".", "sub/..", ".."])
def test_overwrite_of_the_working_folder_is_refused(tmp_path: Path, monkeypatch, name: str) -> None:
    # `--output-dir . --overwrite` (a slip for `./run`) would replace the folder the user works in at the run's end.
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "summary.json").write_text("earlier")
    monkeypatch.chdir(tmp_path / "out")
    with pytest.raises(OutputDirError, match="the folder you are working in"):
        prepare_output_dir(Path(name), overwrite=True)
    assert (tmp_path / "out" / "summary.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_of_the_home_folder_is_refused_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    # `--output-dir ~ --overwrite` run from outside the home folder staged the run beside it, to replace the whole
    # home folder with the results once it completed.
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputDirError, match=f"{home}: is your home folder, which --overwrite would replace with this "
                                             "run's results: pass another --output-dir"):
        prepare_output_dir(Path("~").expanduser(), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing staged beside it
    assert prepare_output_dir(home / "run1", overwrite=True).final == home / "run1"


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    # Two runs started together with one new --output-dir each found it empty: the later's files replaced the
    # first's finished results (and the framework's report of one was deleted by the other: a traceback).
    for overwrite in (False, True):
        out = tmp_path / f"out-{overwrite}"
        if overwrite:
            out.mkdir()
            (out / "summary.json").write_text("earlier")
        first = prepare_output_dir(out, overwrite)
        with pytest.raises(OutputDirError, match="another run is writing there"):
            prepare_output_dir(out, overwrite)
        (first.work / "summary.json").write_text("first")
        publish(first)  # done: the folder is free again, and holds results
        with pytest.raises(OutputDirError, match="exists and is not empty"):
            prepare_output_dir(out)
        assert (out / "summary.json").read_text() == "first"
    failed = prepare_output_dir(tmp_path / "failed")
    discard(failed)  # a failed run releases it too
    discard(prepare_output_dir(tmp_path / "failed"))


def test_default_names_never_collide(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run-2").mkdir()
    assert unused_dir(tmp_path / "run") == tmp_path / "run-3"


LAYOUT = SampleLayout(num_scribbles={"a": 1, "b": 1}, num_objects={"a": 1, "b": 1})


def _report(samples: list[str], interactions: int = 2, jaccard: float = 0.5) -> pd.DataFrame:
    rows = [dict(session_id="s", sequence=seq, scribble_idx=1, interaction=i, object_id=1, frame=0,
                 jaccard=jaccard, contour=jaccard, j_and_f=jaccard, timing=1.0)
            for seq in samples for i in range(1, interactions + 1)]
    return pd.DataFrame(rows)


def test_summaries_of_nothing_do_not_crash() -> None:
    """--max-interactions 0 used to crash inside the finally that writes the report, losing it."""
    for summary in (summarize(_report(["a"]), LAYOUT, 0, 10.0), summarize(_report([]), SampleLayout({}, {}), 2, 10.0)):
        assert summary["auc"] is None and summary["metric_at_threshold"] is None
        assert figures_line(summary) == "no interaction evaluated"
    # A finished run where nothing arrived in time scores 0, as the framework says.
    assert summarize(_report([]), LAYOUT, 2, 10.0)["auc"] == 0.0
    assert summarize_run(_report([]), LAYOUT, 2, 10.0, complete=False)["auc_partial"] is None


def test_partial_summary_keeps_unplayed_samples_out_of_its_figures() -> None:
    report = _report(["a"], jaccard=0.8)
    padded = summarize(report, LAYOUT, 2, 10.0)  # what an interrupted summary used to report as "auc"
    partial = summarize_run(report, LAYOUT, 2, 10.0, complete=False)
    alone = summarize(report, SampleLayout({"a": 1}, {"a": 1}), 2, 10.0)
    assert partial["auc"] is None and partial["metric_at_threshold"] is None and not partial["complete"]
    assert partial["auc_partial"] == pytest.approx(alone["auc"]) and partial["auc_partial"] > padded["auc"]
    assert (partial["samples_played"], partial["samples_total"]) == (1, 2)
    assert "incomplete run (1 of 2 samples): partial AUC-J" in figures_line(partial)
    complete = summarize_run(_report(["a", "b"]), LAYOUT, 2, 10.0)
    assert complete["complete"] and complete["auc"] == pytest.approx(summarize(_report(["a", "b"]), LAYOUT, 2,
                                                                                10.0)["auc"])


def test_one_file_that_cannot_be_written_does_not_cost_the_others(tmp_path: Path, monkeypatch) -> None:
    def broken_plot(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(report_module, "plot_curve", broken_plot)
    summary = summarize_run(_report(["a"]), LAYOUT, 2, 10.0, complete=False)
    paths = write_outputs(tmp_path, _report(["a"]), summary, "title")
    assert set(paths) == {"summary", "report", "per_sequence"}
    assert json.loads((tmp_path / "summary.json").read_text())["auc_partial"] == summary["auc_partial"]
    assert not (tmp_path / "curve.png").exists() and not list(tmp_path.glob(".*"))


def test_report_cli_plots_a_partial_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_outputs(run, _report(["a"]), summarize_run(_report(["a"]), LAYOUT, 2, 10.0, complete=False), "t")
    assert report_module.main([str(run), "--output", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_an_atomic_write_the_file_system_refuses_names_the_file_not_its_temporary(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    import tempfile

    def refused(prefix="", suffix="", dir=None):  # what /sys answers root
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}q1w2e3{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(OSError) as error:  # it named ".sweep.csv.q1w2e3.csv", a file the user never gave
        atomic_write_text(tmp_path / "sweep.csv", "x")
    assert (error.value.filename, error.value.strerror) == (str(tmp_path / "sweep.csv"), "Permission denied")


def test_atomic_writes_never_replace_a_device_or_fifo(tmp_path: Path) -> None:
    import os

    fifo, device = tmp_path / "summary.json", tmp_path / "null.json"
    os.mkfifo(fifo)
    device.symlink_to("/dev/null")  # os.replace put a file in its place: /dev/null itself, as root
    for path, what in ((fifo, "a FIFO"), (device, "a character device")):
        with pytest.raises(OSError, match=f"is {what}.*, not a file results can replace"):
            atomic_write_text(path, "{}")
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.json", "summary.json"]  # no stray temporary


@pytest.mark.parametrize("command", ["bench", "report", "study"])
def test_commands_refuse_a_device_as_output_file_before_any_work(tmp_path: Path, command: str, capsys) -> None:
    output = tmp_path / "out.png"
    output.symlink_to("/dev/null")  # bench replaced it once measured; report's savefig waited on a FIFO
    if command == "study":
        from agent.evaluation.study_inputs import check_output_file

        with pytest.raises(OutputDirError, match="is a character device, --output is the CSV file"):
            check_output_file(output, True, "sweep")
        return
    if command == "bench":
        from agent.evaluation.bench import main

        assert main(["--output", str(output), "--checkpoint", str(tmp_path / "never-read.pt")]) == 2
    else:
        from agent.evaluation.report import main

        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path), "--output", str(output)])
        assert exit_info.value.code == 2
    assert "is a character device" in capsys.readouterr().err
