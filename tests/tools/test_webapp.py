"""The page's API with the tiny test model: every error is a JSON line, a round trip works end to end."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from agent.inference.plan import RoundPlan
from agent.tools.segmenter import VideoSegmenter
from agent.tools.video import InputError
from agent.tools.webapp import AppState, create_app, strokes_to_scribbles

from .server import serve, wait_for_job


@pytest.fixture
def base(tiny_page):
    return tiny_page


def _post(base, path, body=None):
    return requests.post(f"{base}{path}", json=body, timeout=30)


def _object_stroke(frame=4):
    return {"frame": frame, "object_id": 1, "path": [[0.4, 0.5], [0.5, 0.5]]}


def test_errors_are_one_json_line(base, small_video, tmp_path):
    assert requests.get(base, timeout=10).text.startswith("<!doctype html>")
    for path, body, message in [
        ("/api/segment", {"strokes": [_object_stroke()]}, "no video yet"),
        ("/api/open", {"path": ""}, "type the path"),
        ("/api/open", {}, "type the path"),
    ]:
        response = _post(base, path, body)
        assert response.status_code == 400 and message in response.json()["error"]
    assert _post(base, "/api/open", {"path": str(tmp_path / "missing.mp4")}).status_code == 200
    assert "no such video" in wait_for_job(base)["job"]["error"]
    assert _post(base, "/api/open", {"path": "~no-such-user-here/clip.mp4"}).status_code == 200
    assert "no such user?" in wait_for_job(base)["job"]["error"]  # one line, not "unexpected error"

    _post(base, "/api/open", {"path": str(small_video.video)})
    state = wait_for_job(base)
    assert state["job"]["error"] is None and state["video"]["num_frames"] == 8
    assert state["video"]["working"] == [120, 213]
    for path, body, message in [
        ("/api/segment", {"strokes": []}, "no new stroke yet"),
        ("/api/segment", {"strokes": [{"frame": 4, "object_id": 0, "path": [[0.1, 0.1]]}]}, "no object stroke"),
        ("/api/segment", {"strokes": [_object_stroke(frame=8)]}, "the video has 8 frames"),
        ("/api/segment", {"strokes": [{"frame": 1}]}, "malformed stroke"),
        ("/api/segment", {"strokes": [{"frame": 1, "object_id": 1, "path": [[10**400, 0]]}]}, "malformed stroke"),
        ("/api/segment", {"strokes": [{"frame": 1, "object_id": 1, "path": [[True, False]]}]}, "malformed stroke"),
        ("/api/segment", {"strokes": [{"frame": 1, "object_id": 1, "path": [["0.5", "0.5"]]}]}, "malformed stroke"),
        ("/api/suggest", None, "segment first"),
        ("/api/export", {"output": str(tmp_path / "out")}, "nothing segmented yet"),
    ]:
        response = _post(base, path, body)
        assert response.status_code == 400 and message in response.json()["error"], (path, body)
    bad = requests.get(f"{base}/api/frame/99", timeout=10)
    assert bad.status_code == 400 and "does not exist" in bad.json()["error"]
    junk = requests.post(f"{base}/api/segment", data="not json", timeout=10,
                         headers={"Content-Type": "application/json"})
    assert junk.status_code == 400 and "not JSON" in junk.json()["error"]


def test_open_segment_correct_export(base, small_video, tmp_path):
    _post(base, "/api/open", {"path": str(small_video.folder)})
    wait_for_job(base)
    frame = Image.open(requests_get_bytes(f"{base}/api/frame/0"))
    assert frame.size == (213, 120)
    _post(base, "/api/segment", {"strokes": [_object_stroke()]})
    state = wait_for_job(base)
    assert state["job"]["error"] is None and state["rounds"] == 1 and state["num_objects"] == 1
    mask = np.asarray(Image.open(requests_get_bytes(f"{base}/api/mask/0")))
    assert mask.shape == (120, 213, 4) and set(np.unique(mask[..., 3])) <= {0, 255}
    suggested = _post(base, "/api/suggest").json()["frame"]
    assert 0 <= suggested < 8 and suggested != 4
    _post(base, "/api/segment", {"strokes": [{"frame": suggested, "object_id": 0, "path": [[0.0, 0.0], [1.0, 0.0]]}]})
    state = wait_for_job(base)
    assert state["rounds"] == 2
    strokes = requests.get(f"{base}/api/strokes", timeout=10).json()["strokes"]
    assert [s["frame"] for s in strokes] == sorted([4, suggested])

    out = tmp_path / "out"
    _post(base, "/api/export", {"output": str(out)})
    assert wait_for_job(base)["job"]["error"] is None
    assert len(list((out / "masks").glob("*.png"))) == 8 and json.loads((out / "masks.json").read_text())["objects"] == [1]
    again = _post(base, "/api/export", {"output": str(out)})
    assert again.status_code == 400 and "is not empty" in again.json()["error"]

    assert _post(base, "/api/reset").json()["rounds"] == 0


def test_an_export_of_several_rounds_replays_exactly_with_agent_segment(base, small_video, tiny_checkpoint, tmp_path,
                                                                       capsys):
    """The export's scribbles.json held all rounds' strokes in one list: fed back, a video of one chunk played them
    as one round, whose masks are not those of the rounds the page played. It now records the rounds too."""
    from agent.tools.segment_cli import main

    _post(base, "/api/open", {"path": str(small_video.folder)})
    wait_for_job(base)
    rounds = [[_object_stroke(), {"frame": 4, "object_id": 0, "path": [[0.0, 0.05], [1.0, 0.05]]}],
              [{"frame": 1, "object_id": 1, "path": [[0.0, 0.3], [1.0, 0.3]]}]]
    for strokes in rounds:
        _post(base, "/api/segment", {"strokes": strokes})
        assert wait_for_job(base)["job"]["error"] is None
    page = tmp_path / "page"
    _post(base, "/api/export", {"output": str(page)})
    assert wait_for_job(base)["job"]["error"] is None
    record = json.loads((page / "scribbles.json").read_text())
    assert [[len(strokes) for strokes in round_] for round_ in record["rounds"]] == [[0, 0, 0, 0, 2, 0, 0, 0],
                                                                                      [0, 1, 0, 0, 0, 0, 0, 0]]
    assert record["scribbles"][4] == record["rounds"][0][4] and record["scribbles"][1] == record["rounds"][1][1]

    def replay(scribbles, out):
        code = main([str(small_video.folder), "--scribbles", str(scribbles), "--output", str(out), "--checkpoint",
                     str(tiny_checkpoint), "--device", "cpu", "--working-size", "120", "--crf-scale", "0"])
        assert code == 0, capsys.readouterr().err
        return [np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(8)]

    expected = [np.asarray(Image.open(page / "masks" / f"{i:05d}.png")) for i in range(8)]
    assert all(np.array_equal(a, b) for a, b in zip(replay(page / "scribbles.json", tmp_path / "cli"), expected,
                                                    strict=True))
    assert json.loads((tmp_path / "cli" / "scribbles.json").read_text()) == record
    flat = tmp_path / "flat.json"  # the strokes alone, one round: other masks
    flat.write_text(json.dumps({"scribbles": record["scribbles"]}))
    assert not all(np.array_equal(a, b) for a, b in zip(replay(flat, tmp_path / "one"), expected, strict=True))


def requests_get_bytes(url):
    import io

    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return io.BytesIO(response.content)


def test_page_strokes_become_davis_scribbles():
    scribbles = strokes_to_scribbles([{"frame": 1, "object_id": 2, "path": [[-0.1, 0.5], [1.2, 0.5]]}], 3)
    assert scribbles["scribbles"][0] == [] and scribbles["scribbles"][1][0]["path"] == [[0.0, 0.5], [1.0, 0.5]]
    with pytest.raises(InputError, match="needs an object id"):
        strokes_to_scribbles([{"frame": 0, "object_id": 1, "path": []}], 3)


def test_stroke_values_must_be_integers_and_finite():
    for stroke, message in (({"frame": 1.7, "object_id": 1, "path": [[0.1, 0.1]]}, "frame must be an integer"),
                            ({"frame": "3", "object_id": 1, "path": [[0.1, 0.1]]}, "frame must be an integer"),
                            ({"frame": True, "object_id": 1, "path": [[0.1, 0.1]]}, "frame must be an integer"),
                            ({"frame": 0, "object_id": 1.5, "path": [[0.1, 0.1]]}, "object_id must be an integer"),
                            ({"frame": 0, "object_id": 1, "path": [[float("inf"), 0.1]]}, "NaN or infinite")):
        with pytest.raises(InputError, match=message):
            strokes_to_scribbles([stroke], 3)


def test_export_and_upload_never_replace_their_input(base, small_video, tmp_path):
    import shutil

    # A folder of frames named masks/, exported with overwrite to its parent: the frames went first.
    work = tmp_path / "work"
    shutil.copytree(small_video.folder, work / "masks")
    (work / "notes.txt").write_text("mine")
    _post(base, "/api/open", {"path": str(work / "masks")})
    wait_for_job(base)
    _post(base, "/api/segment", {"strokes": [_object_stroke()]})
    wait_for_job(base)
    frames_before = sorted(p.name for p in (work / "masks").iterdir())
    for body, message in (({"output": str(work), "overwrite": True}, "would replace the video it reads"),
                          ({"output": str(work), "overwrite": "false"}, "overwrite must be true or false"),
                          ({"output": None}, "output must be the path of a folder"),
                          ({"output": str(tmp_path / "a\x00b")}, "NUL character")):
        answer = _post(base, "/api/export", body)
        assert answer.status_code == 400 and message in answer.json()["error"], body
    assert sorted(p.name for p in (work / "masks").iterdir()) == frames_before
    assert _post(base, "/api/open", {"path": None}).status_code == 400
    # An upload named like an earlier one goes beside it, not over it (it may be the open video).
    data = small_video.video.read_bytes()
    paths = []
    for _ in range(2):
        assert requests.post(f"{base}/api/upload?name=clip.mp4", data=data, timeout=30).status_code == 200
        paths.append(wait_for_job(base)["video"]["path"])
    assert paths[0] != paths[1] and Path(paths[1]).read_bytes() == data
    assert not Path(paths[0]).exists()  # no longer the open video: uploads do not pile up in /tmp
    text = requests.post(f"{base}/api/upload?name=notes.mp4", data=b"not a video", timeout=30)
    assert text.status_code == 200 and wait_for_job(base)["job"]["error"]
    assert sorted(p.name for p in Path(paths[1]).parent.iterdir()) == [Path(paths[1]).name]  # the open one only
    for name in ("..", "."):
        odd = requests.post(f"{base}/api/upload?name={name}", data=data, timeout=30)
        assert odd.status_code == 400 and "not a usable file name" in odd.json()["error"]
    # One named as the app names an upload still streaming was never deleted: kept until the app stopped.
    for name in (".upload-clip.mp4", "clip.mp4"):
        assert requests.post(f"{base}/api/upload?name={name}", data=data, timeout=30).status_code == 200
        opened = wait_for_job(base)["video"]["path"]
    assert [p.name for p in Path(opened).parent.iterdir()] == [Path(opened).name]


def test_names_that_are_not_utf8_are_shown_not_a_500(base, small_video, tmp_path):
    import os
    import shutil

    # A folder named with a byte that is not UTF-8 (a Latin-1 file system): Python names it with a lone
    # surrogate, which no JSON answer could encode, so every state request was a 500 once it was open.
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"clip\xe9"))
    shutil.copytree(small_video.folder, odd)
    assert _post(base, "/api/open", {"path": odd}).status_code == 200  # JSON carries it as "\udce9"
    state = wait_for_job(base)
    assert state["job"]["error"] is None and state["video"]["name"] == "clip\\xe9"
    assert state["job"]["message"].startswith("opened clip\\xe9: 8 frames")
    assert _post(base, "/api/segment", {"strokes": [_object_stroke()]}).status_code == 200
    assert wait_for_job(base)["job"]["error"] is None
    missing = _post(base, "/api/open", {"path": odd + "-missing"})
    assert missing.status_code == 200
    assert "clip\\xe9-missing: no such video" in wait_for_job(base)["job"]["error"]
    # A lone surrogate no file name holds (JSON carries "\ud800"): the export was a 500, the open the codec's line.
    for path in (odd + "\ud800", "~\ud800/clip"):
        export = _post(base, "/api/export", {"output": path})
        assert export.status_code == 400 and "\\ud800" in export.json()["error"], export.text
        assert "not a usable path" in export.json()["error"]
        assert _post(base, "/api/open", {"path": path}).status_code == 200
        assert "not a usable path" in wait_for_job(base)["job"]["error"]
    refused = _post(base, "/api/export", {"output": odd})  # not empty: its error names the folder
    assert refused.status_code == 400 and "clip\\xe9" in refused.json()["error"]


def test_upload_opens_the_video(base, small_video):
    empty = requests.post(f"{base}/api/upload?name=clip.mp4", data=b"", timeout=10)
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    data = small_video.video.read_bytes()
    assert requests.post(f"{base}/api/upload?name=../../clip.mp4", data=data, timeout=30).status_code == 200
    state = wait_for_job(base)
    assert state["video"]["num_frames"] == 8 and state["video"]["name"] == "clip"


def test_an_upload_sent_as_a_form_is_refused_not_read_as_a_broken_video(base, small_video):
    # curl -F or an HTML form: the file was stored inside the form's wrapping, and a good video was "not a video FFmpeg
    # can read (Could not load meta information)".
    data = small_video.video.read_bytes()
    for form in ({"files": {"file": ("clip.mp4", data, "video/mp4")}}, {"data": {"file": "clip"}}):
        answer = requests.post(f"{base}/api/upload?name=clip.mp4", timeout=30, **form)
        assert answer.status_code == 415, answer.text
        assert "the upload must be the file's bytes as the request body, not a form" in answer.json()["error"]
    assert requests.get(f"{base}/api/state", timeout=10).json()["job"] is None  # nothing opened, nothing kept


def test_app_command_refuses_a_bad_video_before_serving(tmp_path, capsys):
    from agent.tools.app_cli import main

    assert main([str(tmp_path / "missing.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no such video" in err[0]


def test_app_command_checks_port_checkpoint_and_device_before_serving(tmp_path, capsys, monkeypatch):
    import socket

    import torch

    from agent.tools.app_cli import main

    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        for args, fragment in ((["--port", "99999"], "--port must be in 0..65535"),
                               (["--port", str(busy)], f"cannot listen on 127.0.0.1:{busy}"),
                               (["--checkpoint", str(text)], "is corrupt or not a checkpoint"),
                               (["--device", "cuda"], "no CUDA device is available")):
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_app_command_checks_the_address_before_the_checkpoint_and_video(small_video, capsys, monkeypatch):
    """A port in use was found once the checkpoint was read and the video's frames were being read."""
    import socket

    import agent.model.checkpoint
    import agent.tools.video
    from agent.tools.app_cli import main

    def expensive(*args, **kwargs):
        pytest.fail("read the checkpoint or the video before checking the address")

    monkeypatch.setattr(agent.model.checkpoint, "check_checkpoint_fits", expensive)
    monkeypatch.setattr(agent.tools.video, "open_video", expensive)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        for args, fragment in (([str(small_video.video), "--port", str(busy)], f"cannot listen on 127.0.0.1:{busy}"),
                               ([str(small_video.video), "--host", "no.such.host.invalid", "--port", "0"],
                                "cannot listen on no.such.host.invalid:0")):
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_app_command_refuses_an_empty_host(capsys, monkeypatch):
    """`--host ''` listened on every interface and announced http://:8000."""
    import socket

    from agent.tools.app_cli import main

    def listened(*args, **kwargs):
        pytest.fail(f"listened on {args}")

    monkeypatch.setattr(socket, "create_server", listened)
    for host in ("", " "):
        assert main(["--host", host, "--port", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --host: ") and "127.0.0.1" in err[0], err


def test_a_failed_job_reports_one_line():
    import time

    from agent.tools.webapp import AppState

    state = AppState(lambda: None)

    def banner(job):
        raise RuntimeError("ffmpeg failed\n" + "\n".join(f"  configuration line {i}" for i in range(40)))

    def disk(job):
        raise IsADirectoryError(21, "Is a directory", "/out/masks.json")

    for work, expected in ((banner, "unexpected error while exporting: ffmpeg failed (details in the server's log)"),
                           (disk, "export failed: /out/masks.json: Is a directory")):
        job = state.start_job("export", work)
        for _ in range(100):
            if job.finished:
                break
            time.sleep(0.02)
        assert job.error == expected


def test_request_size_limits_and_framework_errors_are_json_lines(tiny_agent, small_video):
    state = AppState(lambda: tiny_agent, working_side=120, max_upload_mb=0.01)  # 10 kB
    data = small_video.video.read_bytes()
    assert len(data) > state.max_upload_bytes
    with serve(create_app(state)) as base:
        # Refused from its Content-Length, and streamed (chunked, no length) past the limit: 413, nothing kept.
        for body in (data, (data[i:i + 4096] for i in range(0, len(data), 4096))):
            answer = requests.post(f"{base}/api/upload?name=big.mp4", data=body, timeout=30)
            assert answer.status_code == 413 and "--max-upload-mb" in answer.json()["error"]
        assert list(Path(state.uploads_dir).iterdir()) == []
        answer = requests.post(f"{base}/api/segment", data=b"[" + b" " * (9 * 2**20) + b"]", timeout=30,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 413 and "larger than 8 MB" in answer.json()["error"]
        nested = requests.post(f"{base}/api/open", data=b"[" * 100_000, timeout=30,
                               headers={"Content-Type": "application/json"})
        assert nested.status_code == 400 and "not JSON" in nested.json()["error"]
        for method, path, status in (("get", "/api/nothing", 404), ("get", "/api/segment", 405),
                                     ("get", "/api/frame/abc", 400)):
            answer = getattr(requests, method)(f"{base}{path}", timeout=10)
            assert answer.status_code == status and answer.json()["error"], (path, answer.text)
    with pytest.raises(InputError, match="max-upload-mb"):
        AppState(lambda: tiny_agent, max_upload_mb=0)


def test_a_body_that_stops_arriving_is_answered_408(tiny_agent, monkeypatch):
    """An upload or a JSON request that declares a body and stops sending it held its connection for ever."""
    import socket

    from agent import asgi

    monkeypatch.setattr(asgi, "BODY_TIMEOUT_SECONDS", 0.2)
    state = AppState(lambda: tiny_agent, working_side=120)
    with serve(create_app(state)) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        for request in (b"POST /api/upload?name=clip.mp4 HTTP/1.1\r\nContent-Length: 100\r\n",
                        b"POST /api/open HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n",
                        b"POST /api/upload?name=clip.mp4 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as client:
                chunked = b"chunked" in request
                client.sendall(request + b"Host: 127.0.0.1\r\n\r\n" + (b"2\r\n{}\r\n" if chunked else b"{}"))
                answer = b"".join(iter(lambda: client.recv(4096), b""))  # until the server closes it
            assert answer.startswith(b"HTTP/1.1 408") and b'{"error":"the request body stopped' in answer, answer
        assert list(Path(state.uploads_dir).iterdir()) == []  # the partial upload is gone
        assert state.job is None


def test_app_command_serves_with_timed_headers(monkeypatch, capsys):
    """Headers sent slowly held the page's connection for ever: the server runs uvicorn with HeaderTimeoutProtocol."""
    import uvicorn

    from agent.asgi import HeaderTimeoutProtocol
    from agent.tools.app_cli import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(options))
    assert main(["--port", "0"]) == 0
    assert served["http"] is HeaderTimeoutProtocol and served["host"] == "127.0.0.1"


def test_app_command_warns_when_it_listens_beyond_this_machine(monkeypatch, capsys):
    """`--host 0.0.0.0` started without a word, though anyone who can reach the port may then open and export files
    as this user (any IP address is a Host the page accepts)."""
    import uvicorn

    from agent.tools.app_cli import exposure_warning, main

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --host 0.0.0.0 listens on every network interface: anyone "
                                               "who can reach port "), err
    assert "open, read and export files as this user" in err[0] and "--host 127.0.0.1" in err[0]
    assert captured.out.startswith("open http://0.0.0.0:")
    assert main(["--port", "0"]) == 0 and capsys.readouterr().err == ""  # 127.0.0.1: no warning
    assert exposure_warning("192.0.2.7", 8000).startswith("--host 192.0.2.7 listens on an address other machines")
    assert exposure_warning("localhost", 8000) is None and exposure_warning("127.0.0.2", 8000) is None


def test_app_command_takes_the_upload_limit():
    from agent.tools.app_cli import build_state, parse_args

    assert build_state(parse_args(["--max-upload-mb", "50"])).max_upload_bytes == 50 * 2**20


@pytest.mark.parametrize("limit", ["1e308", "0", "nan"])
def test_app_command_refuses_an_upload_limit_in_one_line(limit, capsys):
    # 1e308 MB passed the finite check, and its bytes overflowed int(): a traceback at start.
    from agent.tools.app_cli import main

    assert main(["--max-upload-mb", limit, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-upload-mb must be a positive number of at most") and err.count("\n") == 1


def test_app_command_parses_flags_without_the_web_server():
    """`python -m agent.app --help` and bad flags answer before FastAPI is imported (build_state imports it)."""
    import subprocess
    import sys

    code = ("import sys; from agent.tools.app_cli import parse_args; parse_args([]); "
            "print('fastapi' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_port_zero_announces_the_port_the_system_picked():
    from agent.tools.app_cli import check_listen

    port = check_listen("127.0.0.1", 0)
    assert 0 < port <= 65535  # announced as http://127.0.0.1:<port>, not :0
    assert check_listen("127.0.0.1", port) == port  # free again once the probe closed


def test_an_ipv6_host_is_listened_on_and_announced_in_brackets():
    import socket

    from agent.tools.app_cli import check_listen, page_url

    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    # uvicorn listens on ::1; the check refused it ("Address family for hostname not supported")
    assert 0 < check_listen("::1", 0) <= 65535
    assert page_url("::1", 8000) == "http://[::1]:8000" and page_url("127.0.0.1", 80) == "http://127.0.0.1:80"


def test_other_sites_cannot_drive_the_app(base, tmp_path):
    """A page on another site (a cross-site POST, or DNS rebinding: its own name as Host) is refused, and so
    is a body that is not declared JSON (what a foreign page can send without asking the browser first)."""
    port = base.rsplit(":", 1)[1]
    target = str(tmp_path / "out")
    for headers, status in (({"Origin": "http://evil.example"}, 403),
                            ({"Host": f"evil.example:{port}"}, 403),
                            ({"Content-Type": "text/plain"}, 415)):
        answer = requests.post(f"{base}/api/export", data=json.dumps({"output": target}), timeout=10,
                               headers={"Content-Type": "application/json", **headers})
        assert answer.status_code == status, (headers, answer.text)
    assert not Path(target).exists()
    # the app's own page: same origin, and reading from any page is harmless (GET)
    same = requests.post(f"{base}/api/reset", timeout=10, headers={"Origin": base})
    assert same.status_code != 403, same.text  # it reaches the app (which may still say no video is open)
    assert requests.get(f"{base}/api/state", timeout=10, headers={"Origin": "http://evil.example"}).status_code == 200


def test_no_other_site_may_frame_the_page(base):
    """A foreign page showed the app in a frame of its own and could have the user click through it (clickjacking:
    "Start over" forgets every stroke and mask at one click)."""
    for path in ("/", "/static/app.js", "/api/state"):
        answer = requests.get(f"{base}{path}", timeout=10)
        assert answer.headers.get("X-Frame-Options") == "DENY", path
        assert answer.headers.get("Content-Security-Policy") == "frame-ancestors 'none'", path


def test_a_malformed_host_or_origin_is_refused_not_a_500():
    from agent.tools.webapp import foreign_request

    # urlsplit raises ValueError ("Invalid IPv6 URL") for these: the app answered 500 with a traceback logged
    assert "is not this machine" in foreign_request("[::1", None, "GET")
    assert "is refused" in foreign_request("127.0.0.1:8000", "http://[::1", "POST")
    assert foreign_request("[::1]:8000", "http://[::1]:8000", "POST") is None


def test_an_export_refused_as_busy_leaves_no_folder(tmp_path):
    """Two exports at once (two tabs, a segment started in between): the one refused with 409 had already made
    its folder's masks/, which refused the next try as "not empty"."""
    from types import SimpleNamespace

    from agent.tools.webapp import Busy, Job

    state = AppState(lambda: None)
    state.segmenter = SimpleNamespace(has_result=True)
    state.video = SimpleNamespace(path=tmp_path / "clip.mp4")
    state.job = Job("export")  # still running
    with pytest.raises(Busy):
        state.export(str(tmp_path / "out"), False)
    assert not (tmp_path / "out").exists()


def test_a_job_cannot_start_while_reset_replaces_the_segmenter():
    """Reset checked that no job ran outside the job lock: a segment started by another request between the check
    and the new segmenter ran on the old one, its round lost."""
    import threading
    from types import SimpleNamespace

    state = AppState(lambda: None)
    state.segmenter = SimpleNamespace()
    started_meanwhile = []

    def new_segmenter(agent, frames):  # another request starts a job while reset builds the new segmenter
        other = threading.Thread(target=state.start_job, args=("segment", lambda job: None))
        other.start()
        other.join(0.5)  # blocked on the job lock until reset is done
        started_meanwhile.append(state.job)
        return SimpleNamespace(other=other)

    state._segmenter_factory = new_segmenter
    state.reset()
    state.segmenter.other.join(10)
    assert started_meanwhile == [None]


def test_a_reset_cannot_replace_the_segmenter_a_segment_has_taken():
    """Segment read the segmenter before the job lock: a reset landing in between (no job yet) replaced it, and the
    round ran on the discarded segmenter, lost."""
    import threading
    from types import SimpleNamespace

    from agent.tools.webapp import Busy

    state = AppState(lambda: None)
    resets, segmented_current = [], []

    def reset() -> None:
        try:
            state.reset()
            resets.append("done")
        except Busy:  # the segment's job runs: refused, as any reset while a job runs
            resets.append("busy")

    class Segmenter:
        num_frames, rounds = 8, 0

        def check(self, scribbles):  # another request resets while this segment checks its strokes
            self.other = threading.Thread(target=reset)
            self.other.start()
            self.other.join(0.5)  # blocked on the job lock until the segment's job has started

        def segment(self, scribbles, progress):
            segmented_current.append(state.segmenter is self)

    state.segmenter = first = Segmenter()
    state._segmenter_factory = lambda agent, frames: SimpleNamespace()
    job = state.segment([_object_stroke()])
    first.other.join(10)
    for _ in range(1000):
        if job.finished:
            break
        threading.Event().wait(0.01)
    assert job.finished and job.error is None
    assert segmented_current == [True] and len(resets) == 1  # the reset came before the round or after it


def test_a_reset_cannot_replace_the_segmenter_an_export_has_taken(tmp_path, monkeypatch):
    """Export read the segmenter before the job lock: after a reset landing in between (no job yet), the discarded
    segmenter's masks were exported while the page showed nothing segmented."""
    import threading
    from types import SimpleNamespace

    from agent.tools.webapp import Busy

    state = AppState(lambda: None)
    exported_current = []

    def reset() -> None:
        with contextlib.suppress(Busy):  # the export's job runs: refused, as any reset while a job runs
            state.reset()

    class Segmenter:
        def __init__(self):
            self.labels, self.record, self.other = object(), {}, None

        def num_objects(self):
            return 1

        @property
        def has_result(self):  # another request resets while this export checks the result
            if self.other is None:
                self.other = threading.Thread(target=reset)
                self.other.start()
                self.other.join(0.5)  # blocked on the job lock until the export's job has started
            return True

    def fake_export(video, labels, *args):
        exported_current.append(labels is state.segmenter.labels)

    monkeypatch.setattr("agent.tools.webapp.export", fake_export)
    state.segmenter = first = Segmenter()
    state._segmenter_factory = lambda agent, frames: SimpleNamespace(labels=None)
    state.video = SimpleNamespace(path=tmp_path / "clip.mp4", num_frames=8)
    job = state.export(str(tmp_path / "out"), False)
    first.other.join(10)
    for _ in range(1000):
        if job.finished:
            break
        threading.Event().wait(0.01)
    assert job.finished and job.error is None and exported_current == [True]


def test_an_upload_refused_as_busy_is_not_kept(tiny_agent, small_video):
    """A job started while an upload streamed (another tab): the upload was refused with 409 and its file stayed
    in the temporary folder until the next open."""
    import threading
    import time

    state = AppState(lambda: tiny_agent, working_side=120)
    release = threading.Event()
    data = small_video.video.read_bytes()

    def body():
        yield data[:1024]
        deadline = time.monotonic() + 30
        while not any(Path(state.uploads_dir).iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the upload is being written, its idle check passed
        state.start_job("open", lambda job: release.wait(30))  # started while the upload streams
        yield data[1024:]

    with serve(create_app(state)) as base:
        try:
            answer = requests.post(f"{base}/api/upload?name=clip.mp4", data=body(), timeout=30)
        finally:
            release.set()
        assert answer.status_code == 409 and "busy" in answer.json()["error"]
        assert list(Path(state.uploads_dir).iterdir()) == []


def test_a_non_empty_export_folder_names_the_pages_checkbox(tmp_path):
    """The page has no --overwrite to pass: its error names the checkbox (the CLI keeps its flag)."""
    from types import SimpleNamespace

    from agent.tools.export import prepare_output

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    state = AppState(lambda: None)
    state.segmenter = SimpleNamespace(has_result=True)
    state.video = SimpleNamespace(path=tmp_path / "clip.mp4")
    with pytest.raises(InputError, match='is not empty: choose another output folder or tick "overwrite"'):
        state.export(str(tmp_path / "out"), False)
    with pytest.raises(InputError, match="or pass --overwrite"):
        prepare_output(tmp_path / "out")


def test_an_export_into_the_file_systems_root_or_the_home_folder_is_refused(tmp_path, monkeypatch):
    """As root, the page's export with "overwrite" wrote masks/, overlay.mp4, masks.json and scribbles.json into `/`
    (and into the home folder itself, `~`). Nothing is made here even unfixed: mkdir and the job are recorded."""
    from types import SimpleNamespace

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    made, started = [], []
    monkeypatch.setattr(Path, "mkdir", lambda self, *args, **kwargs: made.append(self))
    monkeypatch.setattr("agent.tools.export.unwritable_folder", lambda path: None)  # no probe file in `/`
    state = AppState(lambda: None)
    state.segmenter = SimpleNamespace(has_result=True)
    state.video = SimpleNamespace(path=tmp_path / "clip.mp4")
    monkeypatch.setattr(state, "start_job", lambda kind, work: started.append(kind))
    up = str(tmp_path) + "/.." * len(tmp_path.parts)  # `/` by another name
    for output, where in (("/", "the file system's root"), (up, "the file system's root"),
                          ("~", "your home folder"), (f"{home}/.", "your home folder")):
        for overwrite in (True, False):  # an empty home folder needs no "overwrite"
            with pytest.raises(InputError, match=f": is {where}: an export writes masks/, overlay.mp4, masks.json "
                                                 "and scribbles.json into its folder: choose a folder of their own"):
                state.export(output, overwrite)
    assert made == [] and started == []
    state.export("~/clip-masks", False)  # a folder of its own in the home folder
    assert made == [home / "clip-masks" / "masks"] and started == ["export"]


@pytest.mark.parametrize("earlier", [False, True])
def test_stopping_the_server_mid_export_leaves_the_folder_as_it_was(tiny_agent, small_video, tmp_path, earlier):
    """Ctrl-C on `python -m agent.app` ended the export's daemon thread where it was: its half-written hidden
    `.export-*` folder and an empty `masks` stayed in the output (the next export was "not empty", though nothing
    showed). AppState.close stops the job at its next frame and waits for it to clean up."""
    import threading
    import time

    from agent.tools.export import prepare_output

    state = AppState(lambda: tiny_agent, working_side=120,
                     segmenter_factory=lambda agent, frames: VideoSegmenter(agent, frames, plan=RoundPlan()))

    def finished():
        while not state.job.finished:
            time.sleep(0.01)
        return state.job

    state.open(str(small_video.video))
    assert finished().error is None
    state.segment([_object_stroke()])
    assert finished().error is None
    out = tmp_path / "out"
    if earlier:
        (prepare_output(out) / "masks" / "00000.png").write_bytes(b"earlier")
        (out / "masks.json").write_text("{}")
    labels, halfway = state.segmenter.labels, threading.Event()

    def slow_labels(frame):
        if frame == 3:
            halfway.set()
            while not state._stopping:
                time.sleep(0.01)
        return labels(frame)

    state.segmenter.labels = slow_labels
    state.export(str(out), earlier)
    assert halfway.wait(30)
    state.close()
    assert finished().error == "export stopped: the server is shutting down"
    if earlier:
        assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == ["masks", "masks/00000.png",
                                                                                 "masks.json"]
    else:
        assert not out.exists()
