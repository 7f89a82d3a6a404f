"""python -m agent.segment as a person runs it: a video and a painted scribble image -> masks; bad input ->
one `error:` line and exit code 2, before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from agent.tools.segment_cli import main

from .conftest import mean_j

J_THRESHOLD = 0.8


def test_masks_from_a_scribble_image_match_the_ground_truth(small_video, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(small_video.video), "--scribbles", str(small_video.scribble_dir), "--output", str(out),
                 "--set", "crf.workers=1"])
    assert code == 0, capsys.readouterr().err
    masks = np.stack([np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(8)])
    assert masks.shape == small_video.masks.shape
    j = mean_j(masks, small_video.masks)
    print(f"CLI J from a scribble image: {j:.3f}")
    assert j >= J_THRESHOLD
    meta = json.loads((out / "masks.json").read_text())
    assert len(meta["frames"]) == 8 and meta["objects"] == [1, 2]
    assert (out / "overlay.mp4").stat().st_size > 0
    # finished results are never overwritten silently
    assert main([str(small_video.video), "--scribbles", str(small_video.scribble_dir), "--output", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("missing video", "no such video"),
    ("junk video", "not a video FFmpeg can read"),
    ("frame beyond", "scribbles for frame 8 but the video has 8 frames"),
    ("wrong size", "is 10x10 but the video is 426x240"),
    ("unknown colour", "unknown colour (255, 105, 180)"),
    ("bad config", "unknown key 'nope'"),
    ("bad checkpoint", "is corrupt or not a checkpoint"),
    ("missing device", "this machine has 1 CUDA device(s)"),
])
def test_bad_input_is_one_error_line_and_exit_2(small_video, tmp_path, capsys, monkeypatch, case, message):
    video, scribbles, extra = small_video.video, tmp_path / "scribbles", []
    scribbles.mkdir()
    good = np.asarray(Image.open(next(small_video.scribble_dir.iterdir())))
    name, image = "00001.png", good
    if case == "missing video":
        video = tmp_path / "nothing.mp4"
    elif case == "junk video":
        video = tmp_path / "junk.mov"
        video.write_bytes(b"\x00" * 100)
    elif case == "frame beyond":
        name = "00008.png"
    elif case == "wrong size":
        image = np.zeros((10, 10, 4), np.uint8)
    elif case == "unknown colour":
        image = good.copy()
        image[:3, :3] = (255, 105, 180, 255)
    elif case == "bad checkpoint":  # found as the model loads, once the output folder was made: it left an empty
        garbage = tmp_path / "model.pt"  # masks folder that refused the corrected run as "not empty"
        garbage.write_text("not a checkpoint")
        extra = ["--checkpoint", str(garbage), "--device", "cpu"]
    elif case == "missing device":  # a ValueError traceback as the model loaded
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # CUDA there, but not a fourth device
        monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
        extra = ["--device", "cuda:3"]
    else:
        extra = ["--set", "nope=1"]
    Image.fromarray(image).save(scribbles / name)
    code = main([str(video), "--scribbles", str(scribbles), "--output", str(tmp_path / "out"), *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_an_error_while_a_progress_bar_is_drawn_is_a_line_of_its_own(small_video, tmp_path, capsys, monkeypatch):
    """A frame removed once the folder was checked fails as the frames are read: the error line was appended to
    the half-drawn progress bar ("reading frames:  38%|...error: ...")."""
    import shutil

    from agent.inference.agent import InteractiveAgent

    frames = shutil.copytree(small_video.folder, tmp_path / "frames")

    def removed_while_the_model_loads(**kwargs):
        (frames / "00003.png").unlink()
        return object()

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", removed_while_the_model_loads)
    out = tmp_path / "out"
    code = main([str(frames), "--scribbles", str(small_video.scribble_dir), "--output", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "00003.png" in err[0], err
    assert not out.exists()


def test_a_chunk_too_large_for_the_memory_is_one_error_line(small_video, tmp_path, capsys, monkeypatch):
    """InteractiveAgent.start refuses a sample that would not fit (a large --working-size or --chunk-frames): it
    was a MemoryError traceback naming python -m agent.segment as the way out."""
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: 1)
    out = tmp_path / "out"
    code = main([str(small_video.video), "--scribbles", str(small_video.scribble_dir), "--output", str(out),
                 "--device", "cpu", "--chunk-frames", "4"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, err
    assert "--chunk-frames 4 at --working-size 480 does not fit in memory" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("chunk_frames", ["50", "4"])  # one sample (step's check), chunks (start's)
def test_a_high_object_id_that_does_not_fit_names_the_id_not_the_chunk(small_video, tmp_path, capsys, monkeypatch,
                                                                       chunk_frames):
    """A stray id of 200 (a JSON object_id, a palette colour) makes 201 classes: the line named --chunk-frames."""
    from agent.inference.agent import InteractiveAgent

    monkeypatch.setattr(InteractiveAgent, "_sample_bytes", lambda self, shape, size, classes: 1000 * classes)
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: 10_000)  # one object fits, 200 do not
    strokes = [[] for _ in range(8)]
    strokes[4] = [{"path": [[0.3, 0.3], [0.4, 0.4]], "object_id": 1, "start_time": 0, "end_time": 0},
                  {"path": [[0.6, 0.6], [0.7, 0.7]], "object_id": 200, "start_time": 0, "end_time": 0}]
    scribbles = tmp_path / "scribbles.json"
    scribbles.write_text(json.dumps({"scribbles": strokes}))
    out = tmp_path / "out"
    code = main([str(small_video.video), "--scribbles", str(scribbles), "--output", str(out), "--device", "cpu",
                 "--chunk-frames", chunk_frames])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and err == [f"error: {scribbles}: object id 200 makes 201 classes, each holding scores of every "
                                 "frame, too many for the memory: 2 objects are drawn: number them 1..2 (in a "
                                 "scribble image, the colours of objects 1..2)"], err
    assert not out.exists()


@pytest.mark.parametrize("earlier", [False, True])
def test_sigterm_mid_export_keeps_an_earlier_export_and_leaves_no_partial_folder(small_video, tmp_path, capsys,
                                                                                monkeypatch, tiny_checkpoint, earlier):
    """SIGTERM (`timeout`, a scheduler) killed the run: the empty output folder it made refused the next try as
    "not empty", and an export's half-written hidden folder stayed inside it. It now ends as Ctrl-C does."""
    import os
    import signal

    from agent.tools import export

    out = tmp_path / "out"
    if earlier:  # an earlier export, replaced only once the new one is complete
        (out / "masks").mkdir(parents=True)
        (out / "masks" / "00000.png").write_bytes(b"earlier")
        (out / "masks.json").write_text("earlier")
    upsample = export.upsample_labels

    def stopped_at_frame_3(labels, size, calls=[]):  # noqa: B006 (a counter)
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return upsample(labels, size)

    monkeypatch.setattr(export, "upsample_labels", stopped_at_frame_3)

    def killed(signum, frame):  # what SIGTERM's default does, short of ending pytest
        raise SystemExit("killed by SIGTERM")

    previous = signal.signal(signal.SIGTERM, killed)
    try:
        code = main([str(small_video.video), "--scribbles", str(small_video.scribble_dir), "--output", str(out),
                     "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--crf-scale", "0",
                     *(["--overwrite"] if earlier else [])])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and capsys.readouterr().err.splitlines()[-1] == "interrupted (SIGTERM)"
    if earlier:
        assert sorted(p.name for p in out.iterdir()) == ["masks", "masks.json"]
        assert (out / "masks.json").read_text() == "earlier"
        assert [p.name for p in (out / "masks").iterdir()] == ["00000.png"]
    else:
        assert not out.exists()
