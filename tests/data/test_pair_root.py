"""agent.data.pair_root: one-object videos become two-object ones, each object with the next video's pasted over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.data.davis import DavisReader
from agent.data.pair_root import main, paste_object, write_pair_root


def test_paste_object_puts_the_other_object_at_its_own_place_over_this_one():
    frames = np.zeros((3, 10, 20, 3), np.uint8)
    masks = np.zeros((3, 10, 20), bool)
    masks[:, 2:6, 2:10] = True
    other_frames = np.full((2, 5, 10, 3), 200, np.uint8)  # half the size, two frames: resized, then repeated
    other_masks = np.zeros((2, 5, 10), bool)
    other_masks[0, 1:3, 3:6] = True  # at (2:6, 6:12) once doubled: over the right of object 1
    other_masks[1, 0:1, 0:1] = True
    out, labels = paste_object(frames, masks, other_frames, other_masks)
    for t, k in ((0, 0), (1, 1), (2, 0)):  # frame 2 repeats the other video's frame 0
        pasted = np.zeros((10, 20), bool)
        if k == 0:
            pasted[2:6, 6:12] = True
        else:
            pasted[0:2, 0:2] = True
        np.testing.assert_array_equal(labels[t] == 2, pasted)
        np.testing.assert_array_equal(labels[t] == 1, masks[t] & ~pasted)
        assert (out[t][pasted] == 200).all() and not out[t][~pasted].any()


def test_pair_root_writes_two_object_videos_with_robot_scribbles(one_object_root: Path, tmp_path: Path):
    out = write_pair_root(one_object_root, ["synth-000", "synth-001"], tmp_path / "pairs", positions=(0.5,))
    reader = DavisReader(out)
    assert reader.sequences("val") == ["synth-000-pair", "synth-001-pair"]
    source = DavisReader(one_object_root)
    labels = reader.load_annotations("synth-000-pair")
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels == 2, source.load_annotations("synth-001") == 1)
    assert ((labels == 1) <= (source.load_annotations("synth-000") == 1)).all()
    # the last video's partner is the first
    np.testing.assert_array_equal(reader.load_annotations("synth-001-pair") == 2,
                                  source.load_annotations("synth-000") == 1)
    scribble = reader.load_scribble("synth-000-pair", 1)
    marked = [f for f, strokes in enumerate(scribble["scribbles"]) if strokes]
    assert len(marked) == 1 and {s["object_id"] for s in scribble["scribbles"][marked[0]]} == {1, 2}


def test_pair_root_refuses_one_video_in_one_line_and_writes_nothing(one_object_root: Path, tmp_path: Path, capsys):
    for names in ("synth-000", "synth-000,synth-000"):
        assert main(["--davis-root", str(one_object_root), "--sequences", names, "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "at least two videos" in err[0], err
    assert not (tmp_path / "x").exists()
