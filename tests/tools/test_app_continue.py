"""The page continues an earlier result: `python -m agent.app VIDEO --scribbles S` and the page's Load strokes
play an export's rounds on the video (the same masks as that export), and the next export records them first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from .conftest import make_video
from .server import serve, wait_for_job

SETTINGS = ["--device", "cpu", "--working-size", "120", "--crf-scale", "0"]
CORRECTION = {"frame": 1, "object_id": 0, "path": [[0.0, 0.3], [1.0, 0.3]]}
NEW_STROKE = {"frame": 6, "object_id": 1, "path": [[0.4, 0.5], [0.5, 0.5]]}


@pytest.fixture(scope="module")
def earlier(small_video, tiny_checkpoint, tmp_path_factory) -> Path:
    """An agent.segment export of two rounds: the painted scribble image, then a background correction."""
    from agent.tools.segment_cli import main

    root = tmp_path_factory.mktemp("earlier")
    fixes = root / "fixes.json"
    fixes.write_text(json.dumps({"scribbles": [[] , [CORRECTION]]}))
    out = root / "export"
    code = main([str(small_video.folder), "--scribbles", str(small_video.scribble_dir), "--scribbles", str(fixes),
                 "--output", str(out), "--checkpoint", str(tiny_checkpoint), *SETTINGS])
    assert code == 0
    assert len(json.loads((out / "scribbles.json").read_text())["rounds"]) == 2
    return out


def _masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted((folder / "masks").glob("*.png"))]


def _same_masks(a: Path, b: Path) -> bool:
    first, second = _masks(a), _masks(b)
    return len(first) == len(second) == 8 and all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def _export(base: str, out: Path) -> dict:
    assert requests.post(f"{base}/api/export", json={"output": str(out)}, timeout=30).status_code == 200
    state = wait_for_job(base)
    assert state["job"]["error"] is None, state["job"]
    return json.loads((out / "scribbles.json").read_text())


def _continue_and_export(base: str, earlier: Path, tmp_path: Path) -> None:
    """The page holds the earlier export's rounds: its masks, its strokes as segmented; one more round is exported
    after them."""
    record = json.loads((earlier / "scribbles.json").read_text())
    state = requests.get(f"{base}/api/state", timeout=10).json()
    assert state["rounds"] == 2 and state["has_result"] and state["num_objects"] == 2
    strokes = requests.get(f"{base}/api/strokes", timeout=10).json()["strokes"]
    assert len(strokes) == sum(len(frame) for frame in record["scribbles"])
    assert _export(base, tmp_path / "same") == record
    assert _same_masks(tmp_path / "same", earlier)
    assert requests.post(f"{base}/api/segment", json={"strokes": [NEW_STROKE]}, timeout=30).status_code == 200
    assert wait_for_job(base)["rounds"] == 3
    again = _export(base, tmp_path / "more")
    assert again["rounds"][:2] == record["rounds"]
    assert len(again["rounds"]) == 3 and [len(frame) for frame in again["rounds"][2]] == [0] * 6 + [1, 0]
    assert again["rounds"][2][6][0]["path"] == NEW_STROKE["path"]


def test_the_app_started_with_an_exports_scribbles_continues_it(small_video, tiny_checkpoint, earlier, tmp_path,
                                                                monkeypatch):
    import uvicorn

    from agent.tools.app_cli import main

    served = []

    def run(app, **options):  # the server as uvicorn.run would serve it, driven as the page drives it
        with serve(app) as base:
            state = wait_for_job(base)
            assert state["job"]["kind"] == "open" and state["job"]["error"] is None, state["job"]
            assert "played 2 rounds of strokes from" in state["job"]["message"]
            _continue_and_export(base, earlier, tmp_path)
        served.append(True)

    monkeypatch.setattr(uvicorn, "run", run)
    code = main([str(small_video.folder), "--scribbles", str(earlier / "scribbles.json"), "--port", "0",
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS])
    assert code == 0 and served


def test_a_bad_scribble_source_is_one_line_before_the_server_starts(small_video, tiny_checkpoint, tmp_path,
                                                                   monkeypatch, capsys):
    import uvicorn

    from agent.tools.app_cli import main

    def run(app, **options):
        pytest.fail("served the page with a bad --scribbles")

    monkeypatch.setattr(uvicorn, "run", run)
    beyond = tmp_path / "beyond.json"
    beyond.write_text(json.dumps({"scribbles": [[]] * 9 + [[{"path": [[0.5, 0.5]], "object_id": 1}]]}))
    background = tmp_path / "background.json"
    background.write_text(json.dumps({"scribbles": [[CORRECTION]]}))
    video = str(small_video.folder)
    for args, fragment in (([video, "--scribbles", str(tmp_path / "missing.json")], "missing.json: no such scribble"),
                           ([video, "--scribbles", str(beyond)], "scribbles for frame 9 but the video has 8 frames"),
                           ([video, "--scribbles", str(background)], "background.json: no object scribble"),
                           (["--scribbles", str(beyond)], "--scribbles needs the VIDEO")):
        assert main([*args, "--port", "0", "--checkpoint", str(tiny_checkpoint), *SETTINGS]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_load_strokes_on_the_page_continues_an_export(tiny_page, small_video, earlier, tmp_path):
    def load(path):
        return requests.post(f"{tiny_page}/api/load-strokes", json={"path": path}, timeout=30)

    answer = load(str(earlier / "scribbles.json"))
    assert answer.status_code == 400 and "no video yet" in answer.json()["error"]
    requests.post(f"{tiny_page}/api/open", json={"path": str(small_video.folder)}, timeout=30)
    assert wait_for_job(tiny_page)["job"]["error"] is None
    for path, fragment in ((str(tmp_path / "missing.json"), "missing.json: no such scribble file"),
                           ("  ", "type the path of a scribbles.json"), (None, "path must be text")):
        answer = load(path)
        assert answer.status_code == 400 and fragment in answer.json()["error"], answer.text
    assert requests.get(f"{tiny_page}/api/state", timeout=10).json()["rounds"] == 0  # the page is as it was
    assert load(str(earlier / "scribbles.json")).status_code == 200
    state = wait_for_job(tiny_page)
    assert state["job"]["error"] is None and "played 2 rounds" in state["job"]["message"], state["job"]
    assert state["job"]["warning"] is None  # the page's settings are the export's
    again = load(str(earlier / "scribbles.json"))  # loaded twice: every stroke would be played twice
    assert again.status_code == 400 and "its round 1 is round 1 on the page already" in again.json()["error"]
    _continue_and_export(tiny_page, earlier, tmp_path)


def test_an_export_of_another_video_is_refused_and_other_settings_warned(small_video, tiny_checkpoint, earlier, tmp_path,
                                                                        capsys):
    """An export's strokes are per frame and normalised: fed to another video (here the first 6 frames of its
    own, or one of another shape) they landed on other frames without a word. Replayed with other settings, the
    rounds play, but to other masks than the export's: a warning line says which setting differs."""
    import shutil

    from agent.tools.segment_cli import main

    record = json.loads((earlier / "scribbles.json").read_text())
    assert {**record["segmented"], "content": None} == {"num_frames": 8, "working_size": [120, 213],
                                                        "in_chunks": False, "crf_scale": 0, "content": None}
    cut = tmp_path / "cut"
    cut.mkdir()
    for frame in sorted(small_video.folder.iterdir())[:6]:
        shutil.copy(frame, cut / frame.name)
    wide = tmp_path / "wide"
    wide.mkdir()
    for frame in sorted(small_video.folder.iterdir()):
        Image.fromarray(np.asarray(Image.open(frame))[:, :300]).save(wide / frame.name)
    scribbles = str(earlier / "scribbles.json")
    for video, fragment in ((cut, "exported for a video of 8 frames, but"), (wide, "exported for frames of 213x120")):
        code = main([str(video), "--scribbles", scribbles, "--output", str(tmp_path / "out"),
                     "--checkpoint", str(tiny_checkpoint), *SETTINGS])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {scribbles}: ") and fragment in err[0], err
    code = main([str(small_video.folder), "--scribbles", scribbles, "--output", str(tmp_path / "chunks"),
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS, "--chunk-frames", "4", "--working-size", "100"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1, warnings
    assert "--working-size (frames of 213x120 then, 178x100 now), --chunk-frames (in one agent then, in chunks now)" \
        in warnings[0] and warnings[0].startswith(f"warning: {scribbles} was segmented with another ")
    code = main([str(small_video.folder), "--scribbles", scribbles, "--output", str(earlier),  # not empty
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS, "--working-size", "100"])
    err = capsys.readouterr().err.strip().splitlines()  # the warning came first: two lines for a refused run
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "not empty" in err[0], err
    code = main([str(small_video.folder), "--scribbles", scribbles, "--output", str(tmp_path / "same"),
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS])
    assert code == 0 and "warning:" not in capsys.readouterr().err
    assert _same_masks(tmp_path / "same", earlier)


@pytest.fixture(scope="module")
def other_video(tmp_path_factory):
    """Another video of small_video's frame count and size (another clip of the same camera)."""
    return make_video(tmp_path_factory.mktemp("other"), 8, 240, 426, 2, seed=11)


def _without_content(earlier: Path, tmp_path: Path) -> Path:
    """The earlier export's scribbles.json as an export before "content" wrote it."""
    record = json.loads((earlier / "scribbles.json").read_text())
    del record["segmented"]["content"]
    path = tmp_path / "older.json"
    path.write_text(json.dumps(record))
    return path


def test_an_export_of_another_video_of_the_same_size_is_refused(small_video, other_video, tiny_checkpoint, earlier,
                                                                tmp_path, capsys, monkeypatch):
    """clip1's export fed to clip2 (the same camera: the same frame count and size) played clip1's strokes on
    clip2's content without a word: "segmented" records the content of the first, middle and last frame, and
    another video's is one line, exit 2, before the model loads. The same video re-compressed (its frames as JPEG
    of quality 50, or its H.264 mp4) is the same video; an export without "content" (an older one) plays."""
    from agent.inference.agent import InteractiveAgent
    from agent.tools.segment_cli import main

    scribbles = earlier / "scribbles.json"
    content = json.loads(scribbles.read_text())["segmented"]["content"]
    assert content["frames"] == [0, 4, 7] and [len(means) for means in content["means"]] == [48] * 3
    load = InteractiveAgent.from_pretrained

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the export's content was checked")

    monkeypatch.setattr(InteractiveAgent, "from_pretrained", no_model)
    for video in (other_video.folder, other_video.video):
        code = main([str(video), "--scribbles", str(scribbles), "--output", str(tmp_path / "out"),
                     "--checkpoint", str(tiny_checkpoint), *SETTINGS])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error:", "warning:"))]
        assert code == 2 and err == [f"error: {scribbles}: was drawn on another video (its frames differ from those "
                                     f"of {video}): remove 'segmented' from it to play its strokes anyway"], err
        assert not (tmp_path / "out").exists()
    monkeypatch.setattr(InteractiveAgent, "from_pretrained", load)
    recompressed = tmp_path / "jpeg50"
    recompressed.mkdir()
    for frame in sorted(small_video.folder.iterdir()):
        Image.open(frame).save(recompressed / f"{frame.stem}.jpg", quality=50)
    for number, (video, source) in enumerate(((recompressed, scribbles), (small_video.video, scribbles),
                                              (other_video.folder, _without_content(earlier, tmp_path)))):
        code = main([str(video), "--scribbles", str(source), "--output", str(tmp_path / f"played{number}"),
                     "--checkpoint", str(tiny_checkpoint), *SETTINGS])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error:", "warning:"))]
        assert code == 0 and not err, (video, err)


def test_load_strokes_of_another_videos_export_is_a_red_line_that_changes_nothing(tiny_page, other_video, earlier,
                                                                                tmp_path):
    def load(path):
        return requests.post(f"{tiny_page}/api/load-strokes", json={"path": str(path)}, timeout=30)

    requests.post(f"{tiny_page}/api/open", json={"path": str(other_video.folder)}, timeout=30)
    assert wait_for_job(tiny_page)["job"]["error"] is None
    answer = load(earlier / "scribbles.json")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (f"{earlier / 'scribbles.json'}: was drawn on another video (its frames differ "
                                      f"from those of {other_video.folder}): remove 'segmented' from it to play its "
                                      "strokes anyway")
    state = requests.get(f"{tiny_page}/api/state", timeout=10).json()
    assert state["rounds"] == 0 and state["job"]["kind"] == "open"  # no job started
    assert requests.get(f"{tiny_page}/api/strokes", timeout=10).json()["strokes"] == []
    assert load(_without_content(earlier, tmp_path)).status_code == 200  # an older export: played, as before
    state = wait_for_job(tiny_page)
    assert state["job"]["error"] is None and state["rounds"] == 2, state["job"]


def test_the_app_started_with_another_videos_export_opens_the_video_without_its_strokes(other_video, tiny_checkpoint,
                                                                                      earlier, monkeypatch):
    """The content is checked once the page has read the frames: a red line, the video open without the strokes."""
    import uvicorn

    from agent.tools.app_cli import main

    served = []

    def run(app, **options):
        with serve(app) as base:
            state = wait_for_job(base)
            assert state["video"] is not None and state["rounds"] == 0, state
            assert state["job"]["error"] == (
                f"the strokes of {earlier / 'scribbles.json'} were not played: {earlier / 'scribbles.json'}: was "
                f"drawn on another video (its frames differ from those of {other_video.folder}): remove 'segmented' "
                "from it to play its strokes anyway"), state["job"]
        served.append(True)

    monkeypatch.setattr(uvicorn, "run", run)
    code = main([str(other_video.folder), "--scribbles", str(earlier / "scribbles.json"), "--port", "0",
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS])
    assert code == 0 and served


def test_the_app_started_with_an_export_of_other_settings_warns_once_on_the_terminal_and_the_page(
        small_video, tiny_checkpoint, earlier, monkeypatch, capsys):
    """`python -m agent.app VIDEO --scribbles S` with other settings than S's export: the warning printed before the
    server starts is the one the page shows beside the open job's message, computed once (it was computed twice,
    once for the terminal and once for the page)."""
    import uvicorn

    from agent.tools import replay, webapp
    from agent.tools.app_cli import main

    calls, served, compute = [], [], replay.replay_warnings

    def counted(*args):
        calls.append(args)
        return compute(*args)

    def run(app, **options):
        with serve(app) as base:
            served.append(wait_for_job(base)["job"])

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(replay, "replay_warnings", counted)
    monkeypatch.setattr(webapp, "replay_warnings", counted)
    code = main([str(small_video.folder), "--scribbles", str(earlier / "scribbles.json"), "--port", "0",
                 "--checkpoint", str(tiny_checkpoint), *SETTINGS, "--working-size", "100"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(served) == 1 and len(warnings) == 1, warnings
    job = served[0]
    assert job["error"] is None and "played 2 rounds" in job["message"], job
    assert "--working-size (frames of 213x120 then, 178x100 now)" in job["warning"]
    assert warnings[0] == f"warning: {job['warning']}"
    assert len(calls) == 1


def test_load_strokes_of_an_export_made_with_other_settings_says_so_beside_the_message(tiny_page, small_video,
                                                                                     earlier, tmp_path):
    """agent.segment and agent.app --scribbles print a warning for an export made with other settings (its masks
    do not come back exactly); the page said only "played 2 rounds". The job's warning is shown beside its message."""
    record = json.loads((earlier / "scribbles.json").read_text())
    record["segmented"].update(working_size=[100, 178], crf_scale=0.5)  # as `--working-size 100` made it
    other = tmp_path / "scribbles.json"
    other.write_text(json.dumps(record))
    requests.post(f"{tiny_page}/api/open", json={"path": str(small_video.folder)}, timeout=30)
    assert wait_for_job(tiny_page)["job"]["error"] is None
    assert requests.post(f"{tiny_page}/api/load-strokes", json={"path": str(other)}, timeout=30).status_code == 200
    job = wait_for_job(tiny_page)["job"]
    assert job["error"] is None and "played 2 rounds" in job["message"], job
    assert job["warning"] == (f"{other} was segmented with another --working-size (frames of 178x100 then, 213x120 "
                              "now), --crf-scale (0.5 then, 0 now): its rounds are replayed, but its masks will not "
                              "come back exactly; give the export's settings for them")
