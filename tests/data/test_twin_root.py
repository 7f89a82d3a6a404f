"""agent.data.twin_root: one-object videos become two-object ones, the object and its mirrored copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.data.davis import DavisReader
from agent.data.twin_root import GAP, main, twin_video, write_twin_root


def test_twin_video_pastes_a_mirrored_copy_beside_the_object():
    frames = np.zeros((2, 20, 60, 3), np.uint8)
    masks = np.zeros((2, 20, 60), bool)
    masks[:, 5:10, 4:10] = True  # 6 wide, on the left: the copy goes right by 6 + GAP
    frames[:, 5:10, 4:10, 0] = np.arange(6) * 40  # a gradient, to see the mirror
    out, labels = twin_video(frames, masks)
    assert (labels[:, 5:10, 4:10] == 1).all()
    shifted = slice(4 + 6 + GAP, 10 + 6 + GAP)
    assert (labels[:, 5:10, shifted] == 2).all() and (labels == 2).sum() == 2 * 30
    np.testing.assert_array_equal(out[:, 5:10, shifted, 0], frames[:, 5:10, 4:10, 0][..., ::-1])
    np.testing.assert_array_equal(out[:, 5:10, 4:10], frames[:, 5:10, 4:10])  # the object itself is untouched


def test_twin_video_goes_to_the_side_with_room_and_clips_at_the_border():
    frames = np.zeros((1, 10, 40, 3), np.uint8)
    masks = np.zeros((1, 10, 40), bool)
    masks[0, 2:6, 24:38] = True  # 14 wide, right of centre: the copy goes left by 30 and loses 6 columns
    _, labels = twin_video(frames, masks)
    assert (labels[0, 2:6, 0:8] == 2).all() and (labels == 2).sum() == 4 * 8
    assert (labels[0, 2:6, 24:38] == 1).all()


def test_twin_root_writes_two_object_videos_with_robot_scribbles(one_object_root: Path, tmp_path: Path):
    out = write_twin_root(one_object_root, ["synth-000"], tmp_path / "twins", positions=(0.5,))
    reader = DavisReader(out)
    assert reader.sequences("val") == ["synth-000-twins"]
    labels = reader.load_annotations("synth-000-twins")
    source = DavisReader(one_object_root).load_annotations("synth-000")
    assert set(np.unique(labels)) == {0, 1, 2}
    assert ((labels == 1) <= (source == 1)).all()  # object 1 is the source's, less what the copy covers
    scribble = reader.load_scribble("synth-000-twins", 1)
    marked = [f for f, strokes in enumerate(scribble["scribbles"]) if strokes]
    assert len(marked) == 1 and {s["object_id"] for s in scribble["scribbles"][marked[0]]} == {1, 2}
    assert not (reader.scribbles_dir("synth-000-twins") / "002.json").exists()


def test_twin_root_refuses_bad_requests_in_one_line_and_leaves_nothing(one_object_root: Path, tmp_path: Path,
                                                                      capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("finished results")
    for args, fragment in ((["--sequences", "nope", "--output", str(tmp_path / "x")], "has no sequence(s) nope"),
                           (["--sequences", "synth-000", "--output", str(tmp_path / "busy")], "is not empty")):
        assert main(["--davis-root", str(one_object_root), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert main(["--davis-root", str(one_object_root), "--output", str(tmp_path / "y"), "--positions", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --positions '1.5': comma-separated numbers in [0, 1], e.g. 0.25,0.75\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert (tmp_path / "busy" / "keep.txt").read_text() == "finished results"


def test_twin_root_removes_a_half_written_root(one_object_root: Path, tmp_path: Path, monkeypatch):
    from agent.data import robot_root

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(robot_root, "write_listing", fail)  # the last step of every root writer
    with pytest.raises(OSError, match="disk full"):
        write_twin_root(one_object_root, ["synth-000"], tmp_path / "twins", positions=(0.5,))
    assert not (tmp_path / "twins").exists()
