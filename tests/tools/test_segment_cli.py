"""python -m agent.segment as a person runs it: a video and a painted scribble image -> masks; bad input ->
one `error:` line and exit code 2, before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from agent.config import AgentConfig
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

        def read(*args, **kwargs):  # the frames are read before the model loads: the checkpoint is checked first
            raise AssertionError("the video was read before the checkpoint was checked")
        monkeypatch.setattr("agent.tools.video.WorkingFrames.read", read)
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

    from agent.tools import export

    frames = shutil.copytree(small_video.folder, tmp_path / "frames")
    prepare_output = export.prepare_output

    def removed_once_the_output_is_made(*args, **kwargs):
        (frames / "00003.png").unlink()
        return prepare_output(*args, **kwargs)

    monkeypatch.setattr(export, "prepare_output", removed_once_the_output_is_made)
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


# Rounds: an object stroke across frame 1 changes the masks depending on whether it is a round of its own (the agent
# keeps its first round's state) or played with the first round's strokes as one round.
CORRECTION = {"path": [[0.0, 0.3], [1.0, 0.3]], "object_id": 1, "start_time": 0.0, "end_time": 0.0}


def _tiny_run(tiny_checkpoint) -> list[str]:
    return ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--working-size", "120", "--crf-scale", "0"]


def _masks(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / "masks" / f"{i:05d}.png")) for i in range(8)]


def _correction_file(path, stroke=CORRECTION, frame=1):
    strokes = [[] for _ in range(8)]
    strokes[frame] = [stroke]
    path.write_text(json.dumps({"scribbles": strokes}))
    return path


def _api_rounds(tiny_agent, small_video, rounds, out):
    """What the Python API gives for these rounds (each a segment() call), exported as the CLI exports."""
    from agent.inference.plan import RoundPlan
    from agent.tools.export import export, prepare_output
    from agent.tools.segmenter import VideoSegmenter
    from agent.tools.video import WorkingFrames, open_video

    video = open_video(small_video.folder)
    segmenter = VideoSegmenter(tiny_agent, WorkingFrames.read(video, 120), plan=RoundPlan())
    for scribbles in rounds:
        segmenter.segment(scribbles)
    return export(video, segmenter.labels, prepare_output(out), segmenter.num_objects(), segmenter.record)


def test_each_scribbles_is_a_round_as_through_the_python_api(small_video, tiny_agent, tiny_checkpoint, tmp_path,
                                                            capsys):
    from agent.tools.scribble_input import load_scribbles
    from agent.tools.video import open_video

    correction = _correction_file(tmp_path / "fixes.json")
    out = tmp_path / "out"
    code = main([str(small_video.folder), "--scribbles", str(small_video.scribble_dir), "--scribbles",
                 str(correction), "--output", str(out), *_tiny_run(tiny_checkpoint)])
    assert code == 0, capsys.readouterr().err
    first = load_scribbles(small_video.scribble_dir, open_video(small_video.folder))
    api = _api_rounds(tiny_agent, small_video, [first, json.loads(correction.read_text())], tmp_path / "api")
    assert all(np.array_equal(a, b) for a, b in zip(_masks(out), _masks(api), strict=True))
    record = json.loads((out / "scribbles.json").read_text())
    assert record == json.loads((api / "scribbles.json").read_text())
    assert len(record["rounds"]) == 2 and record["rounds"][1][1] == [CORRECTION]
    assert record["scribbles"][1] == [CORRECTION] and record["scribbles"][4] == record["rounds"][0][4]


def test_a_scribbles_json_without_rounds_is_one_round(small_video, tiny_agent, tiny_checkpoint, tmp_path, capsys):
    """DAVIS's own files (and exports before "rounds") play all their strokes as one round, as before."""
    from agent.tools.scribble_input import load_scribbles
    from agent.tools.video import open_video

    first = load_scribbles(small_video.scribble_dir, open_video(small_video.folder))
    both = {"scribbles": [strokes + ([CORRECTION] if frame == 1 else []) for frame, strokes in
                          enumerate(first["scribbles"])]}
    flat = tmp_path / "davis.json"
    flat.write_text(json.dumps(both))
    out = tmp_path / "out"
    assert main([str(small_video.folder), "--scribbles", str(flat), "--output", str(out),
                 *_tiny_run(tiny_checkpoint)]) == 0, capsys.readouterr().err
    one = _api_rounds(tiny_agent, small_video, [both], tmp_path / "one")
    two = _api_rounds(tiny_agent, small_video, [first, json.loads(_correction_file(tmp_path / "c.json").read_text())],
                      tmp_path / "two")
    assert all(np.array_equal(a, b) for a, b in zip(_masks(out), _masks(one), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(_masks(out), _masks(two), strict=True))  # rounds matter
    record = json.loads((out / "scribbles.json").read_text())
    assert record["segmented"].pop("content")["frames"] == [0, 4, 7]  # the video's (test_content_*)
    assert record == {
        **json.loads(flat.read_text()), "rounds": [both["scribbles"]],
        "segmented": {"num_frames": 8, "working_size": [120, 213], "in_chunks": False, "crf_scale": 0}}


def _rounds_file(path, rounds, union=None):
    """A scribbles.json with these rounds (lists of strokes per frame) and, unless given, their union."""
    if union is None:
        union = [[s for round_ in rounds for s in (round_[f] if f < len(round_) else [])]
                 for f in range(max(map(len, rounds)))]
    path.write_text(json.dumps({"scribbles": union, "rounds": rounds}))
    return path


def _frames(**strokes):  # _frames(f4=[...]) -> 8 lists of strokes
    return [strokes.get(f"f{frame}", []) for frame in range(8)]


OBJECT = {"path": [[0.4, 0.5], [0.5, 0.5]], "object_id": 1}
BACKGROUND = {"path": [[0.1, 0.1], [0.2, 0.1]], "object_id": 0}


@pytest.mark.parametrize("case, message", [
    ("rounds not a list", "'rounds' must be a list of rounds, each a list of strokes per frame as in 'scribbles' "
                          "(got a dict)"),
    ("no round", "'rounds' must be a list of rounds, each a list of strokes per frame as in 'scribbles' (got an "
                 "empty list)"),
    ("round not a list", "round 2 must be a list of strokes per frame as in 'scribbles', got a str"),
    ("bad stroke", "round 2: frame 1 has object_id 1.5: object ids are integers"),
    ("round without a stroke", "round 2 has no stroke that draws (a path of points): every round segments some; "
                               "remove it from 'rounds'"),
    ("frame beyond", "round 2: scribbles for frame 9 but the video has 8 frames (0..7)"),
    ("not the union", "the strokes of 'rounds' on frame 1 are not those of 'scribbles'"),
    ("union reordered", "the strokes of 'rounds' on frame 4 are not those of 'scribbles'"),
    ("round 1 background only", "round 1 has no object stroke, and the first round needs one"),
    ("bad second source", "no such scribble file or folder"),
    ("empty second source", "no scribble (objects are palette colours"),
    ("round of clicks", "round 2 has no stroke that draws (a path of points)"),
    ("round 1 of object clicks", "round 1 has no object stroke, and the first round needs one"),
    ("clicks as second source", "no scribble (objects are palette colours"),
    ("same source twice", "given twice: its rounds would be played twice"),
    ("export that continued the first source", "begins with the 2 rounds of"),
    ("round repeated by a second source", "round 1 repeats round 2 of"),
    ("segmented for more frames", "exported for a video of 12 frames, but"),
    ("segmented not an export's", "'segmented' must be what an export writes"),
    ("content not an export's", "'segmented' 'content' must be what an export writes"),
    ("in_chunks not a bool", "'segmented' must be what an export writes"),
    ("NaN time", "scribbles[4][0]['start_time'] is nan, which JSON does not allow"),  # it was written back out
])
def test_bad_rounds_are_one_error_line_before_any_work(small_video, tmp_path, capsys, monkeypatch, case, message):
    from agent.inference.agent import InteractiveAgent

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the scribbles were checked")
    monkeypatch.setattr(InteractiveAgent, "from_pretrained", no_model)
    path = tmp_path / "scribbles.json"
    first, second = _frames(f4=[OBJECT]), _frames(f1=[BACKGROUND])
    sources = [path]
    if case == "rounds not a list":
        path.write_text(json.dumps({"scribbles": first, "rounds": {"1": first}}))
    elif case == "no round":
        path.write_text(json.dumps({"scribbles": first, "rounds": []}))
    elif case == "round not a list":
        path.write_text(json.dumps({"scribbles": first, "rounds": [first, "second"]}))
    elif case == "bad stroke":
        _rounds_file(path, [first, _frames(f1=[{**OBJECT, "object_id": 1.5}])], union=first)
    elif case == "round without a stroke":
        _rounds_file(path, [first, _frames()])
    elif case == "frame beyond":
        _rounds_file(path, [first, [[] for _ in range(9)] + [[OBJECT]]], union=first)
    elif case == "not the union":
        _rounds_file(path, [first, second], union=first)
    elif case == "union reordered":
        later = _frames(f4=[{**OBJECT, "object_id": 2}])
        _rounds_file(path, [first, later], union=_frames(f4=[later[4][0], OBJECT]))
    elif case == "round 1 background only":
        _rounds_file(path, [second, first])
    elif case == "round of clicks":  # empty paths (clicks without a drag) draw nothing
        _rounds_file(path, [first, _frames(f1=[{**BACKGROUND, "path": []}, {**OBJECT, "path": []}])])
    elif case == "round 1 of object clicks":
        _rounds_file(path, [_frames(f4=[{**OBJECT, "path": []}], f1=[BACKGROUND]), first])
    elif case == "clicks as second source":
        _rounds_file(path, [first, second])
        (tmp_path / "clicks.json").write_text(json.dumps({"scribbles": _frames(f1=[{**BACKGROUND, "path": []}])}))
        sources += [tmp_path / "clicks.json"]
    elif case == "same source twice":  # the second named otherwise
        _rounds_file(path, [first, second])
        sources += [tmp_path / "." / "scribbles.json"]
    elif case == "export that continued the first source":
        _rounds_file(path, [first, second])
        sources += [_rounds_file(tmp_path / "continued.json", [first, second, _frames(f6=[BACKGROUND])])]
    elif case == "round repeated by a second source":  # the correction passed again after the export holding it
        _rounds_file(path, [first, second])
        (tmp_path / "fixes.json").write_text(json.dumps({"scribbles": second}))
        sources += [tmp_path / "fixes.json"]
    elif case in ("segmented for more frames", "segmented not an export's"):
        segmented = {"num_frames": 12, "working_size": [240, 426]} if case.endswith("frames") else [8]
        path.write_text(json.dumps({"scribbles": first, "rounds": [first], "segmented": segmented}))
    elif case == "in_chunks not a bool":  # edited by hand: replay_warnings' KeyError traceback
        segmented = {"num_frames": 8, "working_size": [240, 426], "in_chunks": None, "crf_scale": 0}
        path.write_text(json.dumps({"scribbles": first, "rounds": [first], "segmented": segmented}))
    elif case == "content not an export's":  # checked once the frames are read, before the model loads
        segmented = {"num_frames": 8, "working_size": [240, 426], "content": {"frames": [0, 8], "means": [[1]] * 2}}
        path.write_text(json.dumps({"scribbles": first, "rounds": [first], "segmented": segmented}))
    elif case == "NaN time":  # json.dumps writes NaN into the export's scribbles.json
        path.write_text(json.dumps({"scribbles": _frames(f4=[{**OBJECT, "start_time": float("nan")}])}))
    elif case == "bad second source":  # of three: the third is good
        _rounds_file(path, [first, second])
        sources += [tmp_path / "missing", path]
    else:
        _rounds_file(path, [first, second])
        (tmp_path / "nothing.json").write_text(json.dumps({"scribbles": _frames()}))
        sources += [tmp_path / "nothing.json", path]
    code = main([str(small_video.folder), *(f"--scribbles={source}" for source in sources),
                 "--output", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert err[0].startswith(f"error: {sources[1] if 'source' in case else path}: ")
    assert not (tmp_path / "out").exists()


def test_a_gap_in_the_object_ids_is_a_warning(small_video, tiny_checkpoint, tmp_path, capsys):
    """Ids 1 and 4 (a typo, a palette colour): objects 2 and 3 were empty masks of every frame, unsaid."""
    strokes = [[] for _ in range(8)]
    strokes[4] = [{"path": [[0.3, 0.3], [0.4, 0.4]], "object_id": 1}, {"path": [[0.6, 0.6], [0.7, 0.7]], "object_id": 4}]
    scribbles = tmp_path / "scribbles.json"
    scribbles.write_text(json.dumps({"scribbles": strokes}))
    out = tmp_path / "out"
    code = main([str(small_video.folder), "--scribbles", str(scribbles), "--output", str(out),
                 *_tiny_run(tiny_checkpoint)])
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert code == 0 and warned == [f"warning: {scribbles}: object 4 is drawn but no stroke has object 2, 3: 2 empty "
                                    "masks on every frame (objects are numbered 1..N; a scribble image's colour is "
                                    "its object's)"], warned
    assert json.loads((out / "masks.json").read_text())["objects"] == [1, 2, 3, 4]


def test_a_correction_source_may_hold_background_strokes_only(small_video, tiny_checkpoint, tmp_path, capsys):
    """The first round needs an object stroke; a later --scribbles may only say "this is background"."""
    background = _correction_file(tmp_path / "background.json", BACKGROUND)
    out = tmp_path / "out"
    code = main([str(small_video.folder), "--scribbles", str(background), "--output", str(out),
                 *_tiny_run(tiny_checkpoint)])
    assert code == 2 and "no object scribble" in capsys.readouterr().err and not out.exists()
    code = main([str(small_video.folder), "--scribbles", str(small_video.scribble_dir), "--scribbles",
                 str(background), "--output", str(out), *_tiny_run(tiny_checkpoint)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "scribbles.json").read_text())["rounds"][1][1] == [BACKGROUND]


def test_one_frame_and_one_object_are_counted_in_the_singular(small_video, tiny_checkpoint, tmp_path, capsys,
                                                              monkeypatch):
    """One image segmented printed "masks for 1 frames"; one stray object id, "1 objects are drawn: number them
    1..1 (... the colours of objects 1..1)"."""
    from agent.inference.agent import InteractiveAgent

    folder = tmp_path / "image"
    folder.mkdir()
    Image.fromarray(small_video.frames[0]).save(folder / "00000.png")
    stroke = {"path": [[0.3, 0.3], [0.4, 0.4]], "object_id": 1, "start_time": 0, "end_time": 0}
    scribbles = tmp_path / "scribbles.json"
    scribbles.write_text(json.dumps({"scribbles": [[stroke]]}))
    out = tmp_path / "out"
    assert main([str(folder), "--scribbles", str(scribbles), "--output", str(out), *_tiny_run(tiny_checkpoint)]) == 0
    assert capsys.readouterr().out.startswith("masks for 1 frame in ")

    monkeypatch.setattr(InteractiveAgent, "_sample_bytes", lambda self, shape, size, classes: 1000 * classes)
    monkeypatch.setattr("agent.inference.agent.available_bytes", lambda: 10_000)  # one object fits, 200 do not
    scribbles.write_text(json.dumps({"scribbles": [[dict(stroke, object_id=200)]]}))
    assert main([str(folder), "--scribbles", str(scribbles), "--output", str(tmp_path / "out2"),
                 *_tiny_run(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err.strip().endswith("too many for the memory: 1 object is drawn: number it 1 (in a "
                                                    "scribble image, object 1's colour)")


def test_the_tools_leave_confirmed_labels_off_unless_asked(tmp_path):
    """A person may fix one part of a frame at a time, so the tools do not take the rest of a corrected frame as
    accepted (the benchmark agent does); a config file (a benchmark run's config.json) or --set turns it on."""
    from agent.tools.app_cli import parse_args as app_args
    from agent.tools.segment_cli import agent_config, parse_args

    assert AgentConfig().scribbles.confirm_corrected_frames == "one-object"
    clip = ["clip.mp4", "--scribbles", "s.png", "--output", str(tmp_path / "out")]
    assert agent_config(parse_args(clip)).scribbles.confirm_corrected_frames == "off"
    assert agent_config(app_args([])).scribbles.confirm_corrected_frames == "off"
    on = ["--set", "scribbles.confirm_corrected_frames=all"]
    assert agent_config(parse_args([*clip, *on])).scribbles.confirm_corrected_frames == "all"
    run = tmp_path / "config.json"
    run.write_text(json.dumps({"agent": {"scribbles": {"confirm_corrected_frames": "one-object"}}, "session": {}}))
    assert agent_config(parse_args([*clip, "--config", str(run)])).scribbles.confirm_corrected_frames == "one-object"
    assert agent_config(parse_args([*clip, "--set", "crf.iterations=3"])).crf.iterations == 3  # the rest as given
