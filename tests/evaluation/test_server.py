"""The local evaluation server: a session played over HTTP scores as the in-process one; the protocol's errors;
a server that goes away mid-session."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import requests

import session_runner
from agent.config import ServerConfig, SessionConfig
from agent.data.registry import restore
from agent.data.remote_compat import RemoteServerError, ServerUnavailableError, ServerValueError
from agent.evaluation.baseline import ScribblePaintBaseline
from agent.evaluation.report import KEYS, load_report
from agent.evaluation.server import _decode_rle, create_app, decode_masks, main, rle_counts, serving
from agent.evaluation.session import run_session
from strategies import get_strategy

from davisinteractive.third_party.mask_api import encode_batch_masks  # isort: skip  (after agent: compat)
from davisinteractive.dataset.davis import Davis  # isort: skip

INTERACTIONS = 3
SUMMARY_KEYS = ("auc", "metric_at_threshold", "threshold", "curve", "per_interaction", "evaluated_fraction")


@pytest.fixture(autouse=True)
def _restore_registry():
    yield
    restore()


@pytest.fixture
def server(tiny_synthetic_root):
    app = create_app(ServerConfig(max_interactions=INTERACTIONS, max_time=60.0), tiny_synthetic_root)
    with serving(app) as running:
        yield running


def _cli(root, output_dir, *extra) -> int:
    return session_runner.main(["--predictor", "baseline", "--strategy", "no-finetune", "--davis-root", str(root),
                                "--output-dir", str(output_dir), *extra])


def _frames(report: pd.DataFrame) -> pd.DataFrame:
    columns = [*KEYS, "frame", "jaccard", "contour", "j_and_f", "timing"]
    return report[columns].sort_values([*KEYS, "frame"]).reset_index(drop=True)


def test_http_session_scores_as_in_process(tiny_synthetic_root, server, tmp_path, fixed_timing, caplog):
    """Same predictions (the deterministic baseline) and same timings (fixed_timing): the same numbers."""
    caplog.set_level(logging.INFO, logger="agent.evaluation.server")
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert _cli(tiny_synthetic_root, local, "--max-interactions", str(INTERACTIONS), "--max-time", "60") == 0
    assert _cli(tiny_synthetic_root, remote, "--host", server.url, "--user-key", "tester") == 0

    ours = {run: json.loads((run / "summary.json").read_text()) for run in (local, remote)}
    for key in SUMMARY_KEYS:
        assert ours[remote][key] == ours[local][key], key
    assert ours[remote]["evaluated_fraction"] == 1.0 and ours[remote]["auc"] > 0
    # The server's EvaluationService summarized the same session as the in-process one did.
    framework = {run: ours[run]["framework"] for run in (local, remote)}
    for key in ("auc", "metric_at_threshold", "curve"):
        assert framework[remote][key] == framework[local][key], key
    # Every frame's J and F and every timing, bit for bit.
    pd.testing.assert_frame_equal(_frames(load_report(remote / "report.csv")),
                                  _frames(load_report(local / "report.csv")))
    assert (remote / "per_sequence.csv").read_text() == (local / "per_sequence.csv").read_text()

    # The server's protocol was played (test-dev, its 3 interactions), and the user key was not written.
    config = json.loads((remote / "config.json").read_text())
    assert config["session"]["subset"] == "test-dev" and config["session"]["user_key"] is None
    assert ours[remote]["max_interactions"] == INTERACTIONS and ours[remote]["host"] == server.url
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.evaluation.server"]
    assert sum("POST /api/evaluation/interaction -> 200" in line and "user=tester" in line for line in lines) == 9


def test_remote_shard_plays_part_of_the_server_samples(tiny_synthetic_root, server, tmp_path):
    config = SessionConfig(host=server.url, user_key="tester", subset="test-dev", davis_root=tiny_synthetic_root,
                           output_dir=tmp_path / "out", shard="1/2")
    result = run_session(config, ScribblePaintBaseline(), get_strategy("no-finetune"))
    report = load_report(result.paths["report"])
    written = json.loads(result.paths["summary"].read_text())
    assert set(report["sequence"]) == set(written["layout"]["num_scribbles"]) == {"synth-002"}
    assert written["evaluated_fraction"] == 1.0 and written["shard"] == "1/2"


class _ServerGoesAway(ScribblePaintBaseline):
    """Stops the server when the second sample starts: its first submission finds nobody."""

    def __init__(self, stop):
        super().__init__()
        self.stop, self.samples = stop, 0

    def start(self, frames, num_objects, sequence=None):
        self.samples += 1
        if self.samples == 2:
            self.stop()
        super().start(frames, num_objects, sequence)


def test_server_going_away_is_one_line_and_keeps_results(tiny_synthetic_root, server, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setattr(session_runner, "build_predictor", lambda name, config=None: _ServerGoesAway(server.stop))
    output = tmp_path / "out"
    code = _cli(tiny_synthetic_root, output, "--host", server.url, "--user-key", "tester",
                "--set", "session.retries=0", "--set", "session.connect_timeout=5")
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "evaluation server unavailable: POST" in errors[0] and f"results so far are in {output}" in errors[0]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True
    report = load_report(output / "report.csv")
    assert report["sequence"].nunique() == 1  # the first sample, every interaction of it
    assert sorted(report["interaction"].unique()) == list(range(1, INTERACTIONS + 1))
    assert (output / "curve.png").is_file()


def test_a_server_summary_that_fails_after_every_round_leaves_a_complete_run(tiny_synthetic_root, server, tmp_path,
                                                                             monkeypatch, capsys):
    """The server's own summary failing after every round was played made the run an interrupted one: "results so
    far", exit 1, auc null (and a merge of it too), though every round had been scored."""
    from davisinteractive.session import DavisInteractiveSession

    from agent.data import remote_compat

    def unavailable(self):
        raise remote_compat.ServerUnavailableError("evaluation server unavailable: GET /api/evaluation/summary")
    monkeypatch.setattr(DavisInteractiveSession, "get_global_summary", unavailable)
    output = tmp_path / "out"
    assert _cli(tiny_synthetic_root, output, "--host", server.url, "--user-key", "tester") == 0
    err = capsys.readouterr().err
    assert "error:" not in err and "results so far" not in err
    warnings = [line for line in err.splitlines() if line.startswith("warning: the evaluation server's own summary")]
    assert len(warnings) == 1 and "GET /api/evaluation/summary" in warnings[0], err
    summary = json.loads((output / "summary.json").read_text())
    assert summary["complete"] is True and summary["interrupted"] is False and summary["auc"] > 0
    assert summary["evaluated_fraction"] == 1.0
    assert summary["framework"] == {"unavailable": "evaluation server unavailable: GET /api/evaluation/summary"}


@pytest.mark.parametrize("status, body", [(500, "<html><h1>Internal Server Error</h1></html>"), (200, "null"),
                                          # Python's reader takes them: summary.json held NaN, which is no JSON
                                          (200, '{"auc": NaN, "curve": {"J": [0.5, Infinity, 1e999]}}')],
                         ids=["html-500", "null", "nan"])
def test_a_server_summary_refused_after_every_round_leaves_a_complete_run(tiny_synthetic_root, tmp_path, capsys,
                                                                          status, body):
    """The framework asks for the server's own summary inside its last session.next(): a 500 or a summary that is not
    an object there ended the run as an interrupted one ("results so far", exit 1, auc null), every round played."""
    from starlette.responses import Response

    app = create_app(ServerConfig(max_interactions=INTERACTIONS, max_time=60.0), tiny_synthetic_root)

    @app.middleware("http")
    async def failing_finish(request, call_next):
        answer = await call_next(request)
        finish = request.url.path.endswith("/api/evaluation/finish")
        return Response(body, status_code=status, media_type="text/html") if finish else answer

    output = tmp_path / "out"
    with serving(app) as running:
        assert _cli(tiny_synthetic_root, output, "--host", running.url, "--user-key", "tester",
                    "--set", "session.retries=0") == 0
    err = capsys.readouterr().err
    assert "error:" not in err and "results so far" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: the evaluation server's own summary")]
    assert len(warnings) == 1 and "/api/evaluation/finish" in warnings[0], err
    summary = json.loads((output / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert summary["complete"] is True and summary["interrupted"] is False and summary["auc"] > 0
    assert "/api/evaluation/finish" in summary["framework"]["unavailable"]
    # The framework's own report is finished as on a good finish: its `result_*.tmp.csv` was left behind, with no
    # `result_*.csv`, the last round missing from it.
    assert not list(output.rglob("*.tmp.csv"))
    (framework,) = (output / "framework").glob("result_*.csv")
    rows = pd.read_csv(framework, index_col=0)
    assert len(rows) == len(pd.read_csv(output / "report.csv")) and rows["interaction"].max() == INTERACTIONS


def _answering(root, path: str, body) -> object:
    """The local server, except that `path`'s answers are `body` (the request is still played)."""
    from starlette.responses import JSONResponse

    app = create_app(ServerConfig(max_interactions=INTERACTIONS, max_time=60.0), root)

    @app.middleware("http")
    async def hostile(request, call_next):
        answer = await call_next(request)
        return JSONResponse(body) if path in request.url.path else answer

    return app


@pytest.mark.parametrize("path, body, expected", [
    # A TypeError in the baseline's rasterizer, a traceback; the agent's check named no server.
    ("/api/dataset/scribbles/", [1, 2], r"the scribbles #1 of synth-\d+: expected a dict with a 'scribbles' list"),
    # Fused with the first round's by the framework: a KeyError traceback.
    ("/api/evaluation/interaction", {}, r"the next scribbles of sample #1 \(after interaction 1\) of synth-\d+: "),
    # Another video's scribbles, of the same length: played on this one without a word.
    ("/api/dataset/scribbles/", {"sequence": "synth-x", "scribbles": [[]] * 6},
     r"the scribbles #1 of synth-\d+: they name sequence 'synth-x'"),
])
def test_scribbles_a_server_sends_are_checked_and_one_line(tiny_synthetic_root, tmp_path, capsys, path, body,
                                                           expected):
    output = tmp_path / "out"
    with serving(_answering(tiny_synthetic_root, path, body)) as running:
        code = _cli(tiny_synthetic_root, output, "--host", running.url, "--user-key", "tester",
                    "--set", "session.retries=0")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1
    assert re.search(f"error: evaluation server {running.url}: {expected}", errors[0]), errors[0]
    assert json.loads((output / "summary.json").read_text())["interrupted"] is True


def _report_gaining_a_row(root, **row) -> object:
    """The local server, except that once its report holds two samples it holds one more row, of `row`."""
    from starlette.responses import JSONResponse

    app = create_app(ServerConfig(max_interactions=INTERACTIONS, max_time=60.0), root)

    @app.middleware("http")
    async def hostile(request, call_next):
        answer = await call_next(request)
        if not request.url.path.endswith("/api/evaluation/report"):
            return answer
        report = json.loads(b"".join([chunk async for chunk in answer.body_iterator]))
        if len(set(zip(report["sequence"], report["scribble_idx"], strict=True))) >= 2:
            for column, values in report.items():
                values.append(row.get(column, values[-1]))
        return JSONResponse(report)

    return app


@pytest.mark.parametrize("row, expected", [
    ({"sequence": "synth-x"}, r"row \d+ \('synth-x' #1 .* of a sample this session did not play"),
    ({"interaction": 10**9}, r"row \d+ .*interaction 1000000000, .* of a round this session did not submit"),
    ({"object_id": 10**9}, r"row \d+ .*object 1000000000, .* of an object its video does not have"),
])
def test_a_report_of_rounds_never_played_is_one_line_and_keeps_results(tiny_synthetic_root, tmp_path, capsys, row,
                                                                       expected):
    """Left out of the summary without a word: a report of no round played was AUC 0.000, exit 0."""
    output = tmp_path / "out"
    with serving(_report_gaining_a_row(tiny_synthetic_root, **row)) as running:
        code = _cli(tiny_synthetic_root, output, "--host", running.url, "--user-key", "tester",
                    "--set", "session.retries=0")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1
    assert re.search(f"error: evaluation server {running.url} answered the report with {expected}", errors[0])
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["auc"] is None
    report = load_report(output / "report.csv")  # the report as last fetched: the first sample, every round
    assert report["sequence"].nunique() == 1 and sorted(report["interaction"].unique()) == [1, 2, 3]


def test_a_session_the_server_opens_for_videos_we_lack_leaves_no_folder(tiny_synthetic_root, server, tmp_path,
                                                                        capsys):
    """A wrong --davis-root: one line, and the output directory is not left holding the framework's empty folder
    (it was "results so far", and refused the corrected run as an earlier run's results)."""
    other = tmp_path / "other"
    (other / "JPEGImages" / "480p").mkdir(parents=True)
    output = tmp_path / "out"
    code = session_runner.main(["--predictor", "baseline", "--strategy", "no-finetune", "--davis-root", str(other),
                                "--output-dir", str(output), "--host", server.url, "--user-key", "tester"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot serve" in err and "results so far" not in err
    assert not output.exists()
    assert _cli(tiny_synthetic_root, output, "--host", server.url, "--user-key", "tester") == 0


# --- the protocol --------------------------------------------------------------------------------------
def _keys(user="tester", session="s1") -> dict:
    return {"User-Key": user, "Session-Key": session}


def test_protocol_errors_are_answered_as_the_framework_client_expects(server, tiny_synthetic_root):
    url = server.url
    assert requests.get(f"{url}/api/healthcheck", timeout=10).json() == {"status": "ok"}
    missing = requests.get(f"{url}/api/dataset/samples", timeout=10)
    assert missing.status_code == 401 and missing.json()["error"] == "Unauthorized"
    early = requests.get(f"{url}/api/evaluation/report", headers=_keys(), timeout=10)
    assert early.status_code == 404 and early.json()["error"] == "SessionNotFound"

    samples, max_t, max_i = requests.get(f"{url}/api/dataset/samples", headers=_keys(), timeout=10).json()
    assert (max_t, max_i) == (60.0, INTERACTIONS) and len(samples) == 3
    unknown = requests.get(f"{url}/api/dataset/scribbles/nope/001", headers=_keys(), timeout=10)
    assert unknown.status_code == 400 and unknown.json() == {"error": "ValueError",
                                                            "message": ["Invalid sequence: nope"]}
    sequence, scribble_idx = samples[0]
    wrong = {"sequence": sequence, "scribble_idx": scribble_idx, "timing": 1.0, "interaction": 1,
             "pred_masks": {"size": [1, 2, 3], "frames": [[]]}}
    answer = requests.post(f"{url}/api/evaluation/interaction", json=wrong, headers=_keys(), timeout=10)
    assert answer.status_code == 400 and answer.json()["error"] == "ValueError"
    assert "pred_masks.size must be" in answer.json()["message"][0]
    for size in (None, 5):  # named, not "'NoneType' object is not iterable"
        odd = requests.post(f"{url}/api/evaluation/interaction", headers=_keys(), timeout=10,
                            json={**wrong, "pred_masks": {"size": size, "frames": [[]]}})
        assert odd.status_code == 400 and "pred_masks.size must be" in odd.json()["message"][0]
    malformed = requests.post(f"{url}/api/evaluation/interaction", json={"sequence": sequence},
                              headers=_keys(), timeout=10)
    assert malformed.status_code == 400 and "invalid request" in malformed.json()["message"][0]

    # Sessions are per (user, session) key: another user's session of the same key is not this one.
    other = requests.get(f"{url}/api/evaluation/report", headers=_keys(user="other"), timeout=10)
    assert other.status_code == 404
    finished = requests.post(f"{url}/api/evaluation/finish", headers=_keys(), timeout=10)
    assert finished.status_code == 200 and finished.json()["auc"] == 0.0


def _first_round(url: str, keys: dict) -> tuple[dict, dict]:
    """Start a session's first sample (its scribble fetched); (its video's metadata, a valid interaction-1 body
    of empty masks)."""
    samples, _, _ = requests.get(f"{url}/api/dataset/samples", headers=keys, timeout=10).json()
    sequence, scribble_idx = samples[0]
    requests.get(f"{url}/api/dataset/scribbles/{sequence}/{scribble_idx:03d}", headers=keys, timeout=10)
    meta = Davis.dataset[sequence]
    width, height = meta["image_size"]
    masks = np.zeros((meta["num_frames"], height, width), np.uint8)
    body = {"sequence": sequence, "scribble_idx": scribble_idx, "timing": 1.0, "interaction": 1,
            "pred_masks": json.loads(json.dumps(encode_batch_masks(masks, nb_objects=meta["num_objects"])))}
    return meta, body


def test_candidate_frames_outside_the_video_are_refused_before_the_round_is_stored(server):
    # The framework stores a round's scores before it reads the candidates: an index outside the video used
    # to fail it there (a 500) and leave the sample unplayable.
    url, keys = server.url, _keys(session="candidates")
    meta, body = _first_round(url, keys)
    for candidates in ([meta["num_frames"]], [-1]):
        answer = requests.post(f"{url}/api/evaluation/interaction", headers=keys, timeout=10,
                               json={**body, "next_scribble_frame_candidates": candidates})
        assert answer.status_code == 400 and answer.json()["error"] == "ValueError"
        assert f"frame {candidates[0]} is not in 0..{meta['num_frames'] - 1}" in answer.json()["message"][0]
    played = requests.post(f"{url}/api/evaluation/interaction", headers=keys, timeout=10,
                           json={**body, "next_scribble_frame_candidates": [0]})
    assert played.status_code == 200 and "scribbles" in played.json()


def test_booleans_text_numbers_and_time_past_the_budget_are_refused(server, monkeypatch):
    url, keys = server.url, _keys(session="strict")
    meta, body = _first_round(url, keys)
    post = lambda **changes: requests.post(f"{url}/api/evaluation/interaction", headers=keys, timeout=10,  # noqa: E731
                                           json={**body, **changes})
    for changes in ({"scribble_idx": True}, {"interaction": "1"}, {"timing": True}, {"timing": "2"},
                    {"next_scribble_frame_candidates": [True]}):
        answer = post(**changes)
        assert answer.status_code == 400 and answer.json()["error"] == "ValueError", (changes, answer.text)
    budget = 60.0 * meta["num_objects"]  # the fixture's max_time per object
    assert post(timing=budget - 1).status_code == 200
    late = post(timing=2.0, interaction=2)  # the framework's client never submits past the budget
    assert late.status_code == 400 and "past its" in late.json()["message"][0]
    from agent.evaluation import server as server_module

    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", 10)  # 64 MB in earnest: refused before it is read
    big = requests.post(f"{url}/api/evaluation/interaction", headers=keys, json=body, timeout=10)
    assert big.status_code == 413 and "at most" in big.json()["message"][0]


def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_all(server, monkeypatch):
    # Without a Content-Length (Transfer-Encoding: chunked) FastAPI read the whole body into memory first.
    from agent.evaluation import server as server_module

    url, keys = server.url, _keys(session="chunked")
    _, body = _first_round(url, keys)
    data = json.dumps(body).encode()
    chunks = lambda: (data[i:i + 100] for i in range(0, len(data), 100))  # noqa: E731  (a generator: chunked)
    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", len(data) - 1)
    big = requests.post(f"{url}/api/evaluation/interaction", headers={**keys, "Content-Type": "application/json"},
                        data=chunks(), timeout=10)
    assert big.status_code == 413 and "larger than" in big.json()["message"][0]
    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", len(data))  # within the limit: played as before
    played = requests.post(f"{url}/api/evaluation/interaction", headers={**keys, "Content-Type": "application/json"},
                           data=chunks(), timeout=10)
    assert played.status_code == 200 and "scribbles" in played.json()


def test_unparseable_bodies_and_overlong_masks_are_protocol_errors(server):
    url, keys = server.url, _keys(session="bodies")
    samples, _, _ = requests.get(f"{url}/api/dataset/samples", headers=keys, timeout=10).json()
    nested = requests.post(f"{url}/api/evaluation/interaction", headers={**keys, "Content-Type": "application/json"},
                           data="[" * 100_000, timeout=30)
    assert nested.status_code == 400 and nested.json()["error"] == "ValueError"  # the protocol's shape
    assert requests.get(f"{url}/api/nowhere", headers=keys, timeout=10).status_code == 404
    sequence, scribble_idx = samples[0]
    meta = Davis.dataset[sequence]
    width, height = meta["image_size"]
    huge = {"size": [meta["num_frames"], height, width],
            "frames": [[{"object_id": 1, "counts": "0" * (9 * height * width)}]] + [[]] * (meta["num_frames"] - 1)}
    answer = requests.post(f"{url}/api/evaluation/interaction", headers=keys, timeout=30,
                           json={"sequence": sequence, "scribble_idx": scribble_idx, "timing": 1.0, "interaction": 1,
                                 "pred_masks": huge})
    assert answer.status_code == 400 and "too long for a" in answer.json()["message"][0]


def test_bodies_of_many_json_values_are_refused_before_they_are_parsed(server, monkeypatch):
    """A million empty lists (3 bytes each) parsed into 1.6 GB and held every session for seconds; a body was
    parsed before its keys and session were checked."""
    from agent.evaluation import server as server_module

    url, keys = server.url, _keys(session="values")
    _, body = _first_round(url, keys)
    monkeypatch.setattr(server_module, "MAX_JSON_VALUES", 1000)
    many = requests.post(f"{url}/api/evaluation/interaction", headers=keys, timeout=10,
                         json={**body, "junk": [[]] * 2000})
    assert many.status_code == 413 and "more than 1000 JSON values" in many.json()["message"][0]
    headers = {"Content-Type": "application/json"}
    assert requests.post(f"{url}/api/evaluation/interaction", data="{", headers=headers, timeout=10).status_code == 401
    unknown = requests.post(f"{url}/api/evaluation/interaction", data="{", timeout=10,
                            headers={**headers, **_keys(session="never-started")})
    assert unknown.status_code == 404 and unknown.json()["error"] == "SessionNotFound"
    broken = requests.post(f"{url}/api/evaluation/interaction", data="{", headers={**headers, **keys}, timeout=10)
    assert broken.status_code == 400 and "the body is not JSON" in broken.json()["message"][0]
    played = requests.post(f"{url}/api/evaluation/interaction", headers=keys, json=body, timeout=10)
    assert played.status_code == 200 and "scribbles" in played.json()


def test_rounds_scored_at_once_are_bounded(tiny_synthetic_root, monkeypatch):
    """A round's masks are decoded at the video's size whatever the body's (a few hundred bytes of empty masks took
    400 MB for a 90-frame 480p video, 8 clients at once 3.2 GB): rounds past the limit wait, and all are scored."""
    import threading
    import time

    from agent.evaluation import server as server_module

    monkeypatch.setattr(server_module, "MAX_ROUNDS_SCORED_AT_ONCE", 1)
    decoding, most = [0], [0]
    counter = threading.Lock()

    def slow_decode(*args):
        with counter:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        time.sleep(0.3)
        with counter:
            decoding[0] -= 1
        return decode_masks(*args)

    monkeypatch.setattr(server_module, "decode_masks", slow_decode)
    with serving(create_app(ServerConfig(), tiny_synthetic_root)) as running:
        bodies = {session: _first_round(running.url, _keys(session=session))[1] for session in ("a", "b", "c")}
        answers = {}

        def post(session):
            answers[session] = requests.post(f"{running.url}/api/evaluation/interaction", headers=_keys(session=session),
                                             json=bodies[session], timeout=30)

        clients = [threading.Thread(target=post, args=(session,)) for session in bodies]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    assert [answers[session].status_code for session in bodies] == [200, 200, 200]
    assert most[0] == 1


def test_a_host_that_is_not_this_machine_is_refused(tiny_synthetic_root):
    """A web page the user visits reaches 127.0.0.1 by DNS rebinding, its own name as Host: it played sessions,
    filled the server's and read the root's scribbles."""
    app = create_app(ServerConfig(), tiny_synthetic_root)
    with serving(app) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"evil.example:{port}", "[::1"):
            refused = requests.get(f"{server.url}/api/dataset/samples", timeout=10,
                                   headers={**_keys(session="rebound"), "Host": host})
            assert refused.status_code == 403 and refused.json()["error"] == "Forbidden", refused.text
            assert "is not this machine" in refused.json()["message"][0]
        assert ("tester", "rebound") not in app.state.sessions
        local = requests.get(f"{server.url}/api/dataset/samples", timeout=10,
                             headers={**_keys(session="rebound"), "Host": f"localhost:{port}"})
        assert local.status_code == 200


def test_framework_client_gets_server_errors_as_framework_classes(server, tiny_synthetic_root):
    from davisinteractive.connector.remote import RemoteConnector

    connector = RemoteConnector(user_key="tester", session_key="s2", host=server.url)
    samples, _, _ = connector.get_samples("test-dev", None, None)
    with pytest.raises(ServerValueError, match="Invalid scribble index: 9") as error:
        connector.get_scribble(samples[0][0], 9)
    assert isinstance(error.value, ValueError) and isinstance(error.value, RemoteServerError)


def test_control_characters_of_keys_are_escaped_in_the_log(server, caplog):
    # An escape sequence in a key reached the terminal that shows the log (any key is accepted).
    caplog.set_level(logging.INFO, logger="agent.evaluation.server")
    answer = requests.get(f"{server.url}/api/dataset/samples", headers=_keys("a\x1b[2Jb", "s\x08\x08"), timeout=10)
    assert answer.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.evaluation.server"]
    assert not any("\x1b" in line or "\x08" in line for line in lines)
    assert any("user=a\\x1b[2Jb session=s\\x08\\x08" in line for line in lines), lines
    # So did one in the path (%1b), on any request, an unknown route's 404 included.
    caplog.clear()
    assert requests.get(f"{server.url}/api/%1b[2J%08x", timeout=10).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.evaluation.server"]
    assert not any("\x1b" in line or "\x08" in line for line in lines)
    assert any("GET /api/\\x1b[2J\\x08x -> 404" in line for line in lines), lines


def test_user_key_allowlist(tiny_synthetic_root):
    app = create_app(ServerConfig(user_keys=("alice",)), tiny_synthetic_root)
    with serving(app) as running:
        refused = requests.get(f"{running.url}/api/dataset/samples", headers=_keys(user="mallory"), timeout=10)
        allowed = requests.get(f"{running.url}/api/dataset/samples", headers=_keys(user="alice"), timeout=10)
    assert refused.status_code == 403 and allowed.status_code == 200


def test_sessions_are_bounded_closing_finished_then_idle_ones_and_refusing_past_that(tiny_synthetic_root,
                                                                                     monkeypatch):
    """Every run of a client starts a session (a new Session-Key), and none went away: memory grew without limit."""
    from agent.evaluation import server as server_module

    monkeypatch.setattr(server_module, "MAX_SESSIONS_PER_USER", 2)
    monkeypatch.setattr(server_module, "MAX_SESSIONS", 3)
    app = create_app(ServerConfig(max_interactions=INTERACTIONS, max_time=60.0), tiny_synthetic_root)
    with serving(app) as running:
        def start(user, session):
            return requests.get(f"{running.url}/api/dataset/samples", headers=_keys(user, session), timeout=10)

        def report(user, session):
            return requests.get(f"{running.url}/api/evaluation/report", headers=_keys(user, session), timeout=10)

        assert start("alice", "a1").status_code == start("alice", "a2").status_code == 200
        finish = requests.post(f"{running.url}/api/evaluation/finish", headers=_keys("alice", "a1"), timeout=10)
        assert finish.status_code == 200
        # alice's third session: her finished one is closed to make room, her unfinished one is kept.
        assert start("alice", "a3").status_code == 200
        assert set(app.state.sessions) == {("alice", "a2"), ("alice", "a3")}
        gone = report("alice", "a1")
        assert gone.status_code == 404 and gone.json()["error"] == "SessionNotFound"
        assert "closed to make room" in gone.json()["message"][0] and "at most 2 sessions per user key" in \
            gone.json()["message"][0]
        assert report("alice", "a2").status_code == 200  # a2 now used after a3
        # Both of hers unfinished and in use: her fourth is refused, naming the limit; nothing is closed.
        refused = start("alice", "a4")
        assert refused.status_code == 429 and refused.json()["error"] == "TooManySessions"
        assert "user key 'alice' has 2 sessions" in refused.json()["message"][0]
        assert "finish one" in refused.json()["message"][0]
        # Another user's sessions count against the server's limit (3).
        assert start("bob", "b1").status_code == 200
        full = start("bob", "b2")
        assert full.status_code == 429 and "the server has 3 sessions" in full.json()["message"][0]
        assert "at most 2 sessions per user key and 3 in all" in full.json()["message"][0]
        assert len(app.state.sessions) == 3
        # Once sessions are idle past SESSION_IDLE_SECONDS, the least recently used one (a3) makes room.
        monkeypatch.setattr(server_module, "SESSION_IDLE_SECONDS", 0.0)
        assert start("bob", "b2").status_code == 200
        assert set(app.state.sessions) == {("alice", "a2"), ("bob", "b1"), ("bob", "b2")}
        assert "closed to make room" in report("alice", "a3").json()["message"][0]
        assert report("bob", "b2").status_code == 200
        # A closed session's key may start afresh; a key never seen is told to ask for the samples.
        assert start("alice", "a1").status_code == 200 and report("alice", "a1").status_code == 200
        assert len(app.state.sessions) == 3
        never = report("carol", "c1")
        assert never.status_code == 404 and "ask for the samples first" in never.json()["message"][0]


# --- masks ---------------------------------------------------------------------------------------------
def test_decode_masks_inverts_the_framework_encoding():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, size=(3, 17, 29))
    masks[1] = 0  # a frame without objects
    masks[2, :, :] = 2  # one object everywhere
    encoding = json.loads(json.dumps(encode_batch_masks(masks, nb_objects=3)))  # as it travels
    decoded = decode_masks(encoding, 3, 17, 29, 3)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, masks)


@pytest.mark.parametrize("counts, problem", [("0\x7f", "invalid character"), ("0" * 3, "does not cover"),
                                              ("`", "truncated"), ("o" * 20, "out of range")])
def test_decode_masks_refuses_bad_run_lengths(counts, problem):
    encoding = {"size": [1, 4, 4], "frames": [[{"object_id": 1, "counts": counts}]]}
    with pytest.raises(ValueError, match=problem):
        decode_masks(encoding, 1, 4, 4, 1)


def test_rle_masks_agree_with_pycocotools_and_the_longest_text_is_refused():
    # rle_counts is vectorised (character by character, a 480p object's longest text took 1.6 s of CPU holding
    # every session); masks pycocotools encodes decode to themselves, and that longest text is still refused.
    from pycocotools import mask as coco

    rng = np.random.default_rng(0)
    for height, width, fraction in ((48, 80, 0.5), (480, 854, 0.02), (7, 3, 0.9), (480, 854, 0.0)):
        mask = rng.random((height, width)) < fraction
        mask[height // 3: height // 2, width // 4: width // 2] = True  # long runs: multi-group lengths
        text = coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert np.array_equal(_decode_rle(text, height, width), mask)
    with pytest.raises(ValueError, match="does not cover"):
        decode_masks({"size": [1, 480, 854], "frames": [[{"object_id": 1, "counts": "1" * 8 * (480 * 854 + 1)}]]},
                     1, 480, 854, 1)


def test_rle_counts_reads_deltas_and_negatives():
    # Runs 3, 5, 2, 4: from the 4th on a run is written as its difference to the run two before: 4 - 5 = -1,
    # one 5-bit group with the sign bit: '0' + 0x1f = 'O'.
    assert rle_counts("352O").tolist() == [3, 5, 2, 4]


def test_server_cli_errors_are_one_line(tiny_synthetic_root, tmp_path, capsys):
    assert main(["--davis-root", str(tmp_path / "absent"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: DAVIS root")
    assert main(["--davis-root", str(tiny_synthetic_root), "--max-interactions", "40"]) == 2
    assert "server.max_interactions must be in 1..16" in capsys.readouterr().err
    with serving(create_app(ServerConfig(), tiny_synthetic_root)) as running:
        port = running.url.rsplit(":", 1)[1]
        assert main(["--davis-root", str(tiny_synthetic_root), "--port", port]) == 2
    assert "pass another --port" in capsys.readouterr().err


def test_a_bad_sequence_is_named_and_the_advised_skip_bad_sequences_serves_the_others(tiny_synthetic_root, tmp_path,
                                                                                      capsys, monkeypatch):
    """The server's error advised --skip-bad-sequences, which only session_runner.py accepted."""
    import shutil
    from types import SimpleNamespace

    from agent.evaluation import server as server_module

    root = tmp_path / "root"
    shutil.copytree(tiny_synthetic_root, root)
    broken = sorted((root / "Annotations" / "480p").iterdir())[1]
    (broken / "00002.png").write_bytes(b"not a png")
    assert main(["--davis-root", str(root), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken / '00002.png'}: cannot decode") and "--skip-bad-sequences" in err
    served = []
    monkeypatch.setattr(server_module, "_uvicorn_server",
                        lambda app: SimpleNamespace(run=lambda sockets: served.append(app)))
    assert main(["--davis-root", str(root), "--port", "0", "--skip-bad-sequences"]) == 0
    sequences = served[0].state.registration.sequences
    assert broken.name not in sequences and len(sequences) == 2


def test_unreachable_server_is_one_clear_error(tmp_path, tiny_synthetic_root):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SessionConfig(host=f"http://127.0.0.1:{port}", user_key="tester", subset="test-dev",
                           davis_root=tiny_synthetic_root, output_dir=tmp_path / "out", retries=0)
    with pytest.raises(ServerUnavailableError, match="GET .*/api/healthcheck: Connection refused"):
        run_session(config, ScribblePaintBaseline(), get_strategy("no-finetune"))
    assert not (tmp_path / "out" / "summary.json").exists()  # nothing was played: nothing to keep


def test_a_body_that_stops_arriving_is_answered_408(monkeypatch, tiny_synthetic_root):
    """A client that declares a body and stops sending it held its connection for ever."""
    import socket

    from agent import asgi

    monkeypatch.setattr(asgi, "BODY_TIMEOUT_SECONDS", 0.2)
    with serving(create_app(ServerConfig(), tiny_synthetic_root)) as running:
        address = running.url.removeprefix("http://").rsplit(":", 1)
        for framing in (b"Content-Length: 100\r\n\r\n{}", b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"):
            with socket.create_connection((address[0], int(address[1])), timeout=10) as client:
                client.sendall(b"POST /api/interaction HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Key: tester\r\n"
                               b"Content-Type: application/json\r\n" + framing)
                answer = b"".join(iter(lambda: client.recv(4096), b""))  # until the server closes it
            assert answer.startswith(b"HTTP/1.1 408") and b"stopped arriving" in answer, answer
            assert b"connection: close" in answer.lower()


def test_bodies_read_at_once_are_bounded_together(monkeypatch):
    """N clients each sending up to 64 MB held N x 64 MB: the bodies being read or answered at once are bounded
    together, a body past that is answered 503 unread, and a finished request's bytes are released."""
    import asyncio

    from agent.evaluation import server as server_module

    monkeypatch.setattr(server_module, "MAX_BODY_BYTES_IN_FLIGHT", 100)

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        limited = server_module.BodyLimit(app)
        stalled = asyncio.Event()

        async def call(headers, parts):
            answers = []

            async def receive():
                part = parts.pop(0)
                if part is None:  # the body stops here until the test goes on
                    await stalled.wait()
                    part = parts.pop(0)
                return part

            async def send(message):
                answers.append(message)

            await limited({"type": "http", "headers": headers}, receive, send)
            return answers[0]["status"], b"".join(m.get("body", b"") for m in answers[1:])

        part = lambda size, more: {"type": "http.request", "body": b"x" * size, "more_body": more}  # noqa: E731
        first = asyncio.create_task(call([(b"content-length", b"60")], [part(30, True), None, part(30, False)]))
        while limited.in_flight == 0:  # the first body is coming: its 60 declared bytes are held
            await asyncio.sleep(0)
        declared = await call([(b"content-length", b"50")], [part(50, False)])
        chunked = await call([], [part(30, True), part(30, False)])  # no Content-Length: counted as it comes
        small = await call([(b"content-length", b"40")], [part(40, False)])
        stalled.set()
        assert await first == (200, b"ok")
        after = await call([(b"content-length", b"100")], [part(100, False)])
        return declared, chunked, small, after, limited.in_flight

    declared, chunked, small, after, left = asyncio.run(scenario())
    for status, body in (declared, chunked):
        assert status == 503 and json.loads(body)["error"] == "RuntimeError"
        assert "try again" in json.loads(body)["message"][0]
    assert small == (200, b"ok") and after == (200, b"ok") and left == 0


def test_a_content_length_in_other_digits_is_answered_413_not_a_traceback():
    # `¹` (latin-1, as ASGI headers are decoded) passed str.isdigit(), then int() raised ValueError in the middleware
    import asyncio

    from agent.evaluation import server as server_module

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the body was passed on")

    async def scenario():
        answers = []

        async def receive():
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def send(message):
            answers.append(message)

        await server_module.BodyLimit(app)({"type": "http", "headers": [(b"content-length", b"\xb9")]}, receive, send)
        return answers[0]["status"], json.loads(b"".join(m.get("body", b"") for m in answers[1:]))

    status, body = asyncio.run(scenario())
    assert status == 413 and body["message"][0].startswith("the request declares '\u00b9' bytes: at most 64 MB")


def test_headers_that_stop_arriving_are_answered_408(monkeypatch, tiny_synthetic_root):
    """Headers sent slowly (or never finished) held their connection for ever (uvicorn has no such limit)."""
    import socket

    from agent import asgi

    monkeypatch.setattr(asgi, "HEADER_TIMEOUT_SECONDS", 0.2)
    with serving(create_app(ServerConfig(), tiny_synthetic_root)) as running:
        address = running.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((address[0], int(address[1])), timeout=10) as client:
            client.sendall(b"GET /api/healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Key: tes")
            answer = b"".join(iter(lambda: client.recv(4096), b""))  # until the server closes it
        assert answer.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in answer, answer
        assert requests.get(f"{running.url}/api/healthcheck", timeout=10).json() == {"status": "ok"}
