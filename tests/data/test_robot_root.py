"""agent.data.robot_root: held-out videos with ground truth become a validation root with robot scribbles."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.data.davis import DatasetError, DavisReader
from agent.data.robot_root import main, write_robot_root
from agent.data.synthetic import SyntheticSpec, write_dataset


@pytest.fixture(scope="module")
def train_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_dataset(root, SyntheticSpec(num_sequences=2, num_frames=8, height=96, width=160, subset="train", seed=5))
    return root


def test_robot_root_links_frames_and_draws_two_first_scribbles(train_root: Path, tmp_path: Path):
    out = write_robot_root(train_root, ["synth-001"], tmp_path / "holdout", positions=(0.25, 0.75))
    reader = DavisReader(out)
    assert reader.sequences("val") == ["synth-001-heldout"]
    assert (out / "JPEGImages" / "480p" / "synth-001-heldout").is_symlink()
    source = DavisReader(train_root)
    assert (reader.load_frames("synth-001-heldout") == source.load_frames("synth-001")).all()
    frames = []
    for index in (1, 2):
        scribble = reader.load_scribble("synth-001-heldout", index)
        marked = [f for f, strokes in enumerate(scribble["scribbles"]) if strokes]
        assert len(marked) == 1 and len(scribble["scribbles"]) == 8
        assert {s["object_id"] for s in scribble["scribbles"][marked[0]]} == {1, 2}  # synth-001 has 2 objects
        frames.append(marked[0])
    assert frames[0] < frames[1]  # early and late in the video


def test_robot_root_refuses_a_non_empty_output_and_unknown_videos(train_root: Path, tmp_path: Path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("finished results")
    with pytest.raises(DatasetError, match="is not empty"):
        write_robot_root(train_root, ["synth-000"], tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "finished results"
    assert main(["--davis-root", str(train_root), "--sequences", "nope", "--output", str(tmp_path / "x")]) == 2
    assert "has no sequence(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["root", "parent"])
def test_an_output_that_is_or_holds_the_source_root_is_not_advised_removed(train_root: Path, capsys, where: str):
    """It was "<root> is not empty: remove it or choose another --output": the dataset itself."""
    output = train_root if where == "root" else train_root.parent
    assert main(["--davis-root", str(train_root), "--sequences", "synth-000", "--output", str(output)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --output {output} ") and "remove" not in line
    assert ("is the --davis-root it reads" if where == "root" else f"holds the --davis-root {train_root}") in line


def test_robot_root_refuses_odd_names_and_outputs_before_writing(train_root: Path, tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    for sequences, output, fragment in ((",", "a", "an empty name between commas"),
                                        ("synth-000,synth-000", "b", "names synth-000 more than once"),
                                        ("../480p/synth-000", "c", "without a path"),
                                        ("synth-000", "file/out", "is a file"),
                                        ("synth-000", "file", "is a file")):
        assert main(["--davis-root", str(train_root), "--sequences", sequences,
                     "--output", str(tmp_path / output)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written
    # The same position twice wrote the same scribble twice (001.json == 002.json): one sample counted twice.
    assert main(["--davis-root", str(train_root), "--sequences", "synth-000", "--positions", "0.5,0.50",
                 "--output", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --positions '0.5,0.50': position 0.5 given more than once") and \
        err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # An empty item (`0.25,`, an unset variable) was dropped without a word: one scribble a video instead of two. It
    # is config.comma_names' line, as for --sequences (it was its own, "an empty item ...: give each position").
    for positions in ("0.25,", "0.25,,0.75", ",0.75"):
        assert main(["--davis-root", str(train_root), "--sequences", "synth-000", "--positions", positions,
                     "--output", str(tmp_path / "e")]) == 2
        assert capsys.readouterr().err == (f"error: --positions {positions!r}: an empty name between commas (an unset "
                                           "variable?): name each one\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_robot_root_checks_every_annotation_before_writing(train_root: Path, tmp_path: Path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(train_root, broken)
    annotation = sorted((broken / "Annotations" / "480p" / "synth-001").iterdir())[3]
    annotation.write_bytes(annotation.read_bytes()[:40])  # truncated
    assert main(["--davis-root", str(broken), "--sequences", "synth-000,synth-001",
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {annotation}: cannot decode"), err
    assert not (tmp_path / "out").exists()  # synth-000 was not written first


def test_robot_root_removes_a_half_written_root(train_root: Path, tmp_path: Path, monkeypatch):
    from agent.data import robot_root

    def fail(*args, **kwargs):
        raise OSError("disk full")

    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(robot_root, "write_listing", fail)
    for output in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(OSError, match="disk full"):
            write_robot_root(train_root, ["synth-000"], output)
    assert not (tmp_path / "new").exists() and not any((tmp_path / "empty").iterdir())
    assert (train_root / "JPEGImages" / "480p" / "synth-000").is_dir()  # the links' targets are untouched


def test_robot_root_stopped_by_sigterm_leaves_no_root(train_root: Path, tmp_path: Path, monkeypatch, capsys):
    # SIGTERM (timeout, a scheduler) killed it mid-way: the videos written so far passed for a finished root.
    import os
    import signal

    from agent.data import robot_root

    def stopped(output, names):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(robot_root, "write_listing", stopped)
    assert main(["--davis-root", str(train_root), "--sequences", "synth-000",
                 "--output", str(tmp_path / "out")]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted (SIGTERM): nothing written"
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_positions_that_land_on_one_frame_write_its_scribble_once(tmp_path: Path):
    # The object shows well on frame 0 only: 0.25 and 0.75 both drew there, 001.json == 002.json (one sample
    # counted twice in every session on the root).
    import numpy as np

    from agent.data.robot_root import write_first_scribbles

    masks = np.zeros((8, 96, 160), np.uint8)
    masks[0, 20:80, 30:130] = 1
    masks[1:, 40:44, 60:64] = 1  # a sliver in every later frame
    write_first_scribbles(tmp_path, "clip", masks, 1, positions=(0.25, 0.75))
    assert sorted(p.name for p in (tmp_path / "Scribbles" / "clip").iterdir()) == ["001.json"]
