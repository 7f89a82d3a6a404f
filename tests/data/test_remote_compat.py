"""agent.data.remote_compat: the framework's HTTP client never eval()s what a server sends, has timeouts, and
says in one error what went wrong."""

from __future__ import annotations

import json
import socket

import pytest
import requests
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agent.data import remote_compat
from agent.data.remote_compat import (
    RemoteServerError,
    ServerRuntimeError,
    ServerUnavailableError,
    ServerValueError,
    handle_response,
)
from agent.evaluation.server import serving

from davisinteractive.connector.remote import RemoteConnector  # isort: skip  (after agent: compat)
from davisinteractive.session import DavisInteractiveSession  # isort: skip


@pytest.fixture(autouse=True)
def _restore_settings(monkeypatch):
    for name in ("connect_timeout", "read_timeout", "retries", "backoff"):
        monkeypatch.setattr(remote_compat.settings, name, getattr(remote_compat.settings, name))


def _hostile(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _stub(status: int, body) -> FastAPI:
    """A server that is healthy and answers the samples request with `body`."""
    app = FastAPI()
    app.get("/api/healthcheck")(lambda: {"status": "ok"})
    app.get("/api/dataset/samples")(lambda: JSONResponse(body, status_code=status))
    return app


def _response(status: int, body: bytes, url: str = "http://server/api/x") -> requests.Response:
    response = requests.Response()
    response.status_code, response._content, response.url = status, body, url
    response.request = requests.Request("GET", url).prepare()
    return response


class _Connector:
    host = "http://server"
    _rounds_sent = {("dog", 1): 1}  # as post_predicted_masks records them: the rounds a report may hold


def test_hostile_error_name_from_a_server_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    body = {"error": _hostile(marker), "message": ["samples are gone"]}
    with serving(_stub(400, body)) as server:
        session = DavisInteractiveSession(host=server.url, user_key="tester", subset="test-dev")
        with pytest.raises(RemoteServerError, match="unknown error .*: samples are gone") as error:
            session.__enter__()  # asks for the samples
    assert type(error.value) is RemoteServerError  # no class the server named
    assert not marker.exists()


def test_the_hostile_payload_is_live_with_the_framework_handler(tmp_path):
    """Without the patch the same answer runs the server's code: the test above tests something real."""
    marker = tmp_path / "pwned"
    original = remote_compat._framework_handle_response
    assert original is not None and RemoteConnector._handle_response is handle_response
    answer = _response(400, json.dumps({"error": _hostile(marker), "message": "x"}).encode())
    with pytest.raises(TypeError):  # eval() returned None, which is then called
        original(_Connector(), answer, raise_error=True)
    assert marker.exists()


def test_framework_error_names_are_rebuilt_from_the_table():
    answer = _response(400, json.dumps({"error": "ValueError", "message": ["Invalid sequence: x"]}).encode())
    with pytest.raises(ServerValueError, match=r"^evaluation server http://server: Invalid sequence: x$") as error:
        handle_response(_Connector(), answer, raise_error=True)
    assert isinstance(error.value, ValueError)
    answer = _response(400, json.dumps({"error": "RuntimeError", "message": "already submitted"}).encode())
    with pytest.raises(ServerRuntimeError, match="already submitted"):
        handle_response(_Connector(), answer)


@pytest.mark.parametrize("status, body, expected", [
    (500, b"Internal Server Error", r"answered GET http://server/api/x with 500: Internal Server Error"),
    (401, b'{"error": "Unauthorized", "message": ["keys required"]}', r"with 401 Unauthorized: keys required"),
    (400, b'{"error": "SystemExit", "message": "bye"}', r"an unknown error 'SystemExit': bye"),
    (200, b"<html>not json</html>", r"something that is not JSON"),
    # A RecursionError traceback, and the run's empty framework/ folder left behind.
    (200, b"[" * 100000 + b"]" * 100000, r"answered GET http://server/api/x with JSON nested too deeply to read"),
    (400, b"[" * 100000 + b"]" * 100000, r"with 400: \[\[\[\["),
    (400, b'{"error": "ValueError", "message": "' + b"x" * 5000 + b'"}', r"x\.\.\.$"),
])
def test_other_answers_are_one_clear_error(status, body, expected):
    with pytest.raises(RemoteServerError, match=expected) as error:
        handle_response(_Connector(), _response(status, body), raise_error=True)
    assert "\n" not in str(error.value) and len(str(error.value)) < 700


NGINX_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
             b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
DEBUG_PAGE = (b"<!DOCTYPE html><html><head><style>body { font: 12px sans-serif; }" + b" " * 2000 + b"</style>"
              b"<script>var x = 1;</script></head><body><h1>KeyError at /api/evaluation/interaction</h1>"
              b"<p>&#x27;goat&#x27;</p></body></html>")


@pytest.mark.parametrize("status, body, expected", [
    (502, NGINX_502, r"with 502: an HTML page: 502 Bad Gateway$"),
    (500, DEBUG_PAGE, r"with 500: an HTML page: KeyError at /api/evaluation/interaction 'goat'$"),
    (200, b"<html><head><title>Sign in &amp; continue</title></head><body>" + b"x" * 5000 + b"</body></html>",
     r"not JSON: 'an HTML page: Sign in & continue'$"),
])
def test_an_html_page_is_quoted_by_its_title_or_words(status, body, expected):
    """A proxy's error page, a framework's debug page or a login page was quoted as its first 500 characters of
    markup: its style sheet, not what went wrong."""
    with pytest.raises(RemoteServerError, match=expected):
        handle_response(_Connector(), _response(status, body), raise_error=True)


def test_a_servers_control_characters_never_reach_the_terminal():
    """ANSI escapes and BEL in a server's error name or message, or in a sequence name, were printed as sent: a
    server could clear the screen, retitle the window, or hide the error line."""
    body = json.dumps({"error": "\x1b]0;pwned\x07", "message": "\x1b[2J\u202eevil"}).encode()
    with pytest.raises(RemoteServerError) as error:
        handle_response(_Connector(), _response(400, body), raise_error=True)
    assert str(error.value).isprintable() and "\\x1b[2J\\u202eevil" in str(error.value)
    samples = _response(200, json.dumps([[["\x1b[31mdog", 1]], 60, 2]).encode(), url=SAMPLES)
    with pytest.raises(RemoteServerError, match=r"sequence '\\x1b\[31mdog', not a folder name") as error:
        handle_response(_Connector(), samples)
    assert str(error.value).isprintable()


def test_good_answer_passes():
    assert handle_response(_Connector(), _response(200, b'{"status": "ok"}')) is False


SAMPLES = "http://server/api/dataset/samples"


@pytest.mark.parametrize("body, expected", [
    ({"a": 1, "b": 2, "c": 3}, r"\{.*\}, not \[samples, max_time, max_interactions\]"),  # unpacked as its keys
    ([5, 60, 2], r"samples 5, not a list"),  # a TypeError in the framework's shuffle
    ([[], 60, 2], r"no sample to play"),  # a FileNotFoundError at the session's end
    ([[["dog", "x"]], 60, 2], r'a sample \["dog", "x"\], not \[sequence name, scribble index\]'),
    ([[["dog", 1.7]], 60, 2], r"a sample \[\"dog\", 1.7\]"),  # was played as scribble 1
    ([[["dog", True]], 60, 2], r"a sample \[\"dog\", true\]"),
    ([[["dog", 0]], 60, 2], r"dog #0: scribble indices count from 1"),
    ([[["../dog", 1]], 60, 2], r"'../dog', not a folder name"),
    ([[["dog", 1], ["dog", 1]], 60, 2], r"sample dog #1 twice"),
    # Scored over scribbles 1..N: a gap counted J = 0 for the missing samples, #10**9 hung the summary for ever.
    ([[["dog", 1], ["dog", 3]], 60, 2], r"sample dog #3 but not #2: .* must be 1..N without a gap"),
    ([[["cat", 1], ["dog", 10**9]], 60, 2], r"sample dog #1000000000 but not #1"),
    ([[["dog", 1]], "abc", 2], r'max_time "abc", not a number of seconds in 1..600'),
    ([[["dog", 1]], -5, 2], r"max_time -5,"),  # was "session.max_time must be ...", as if ours were wrong
    ([[["dog", 1]], 60, 2.5], r"max_interactions 2.5, not an integer in 1..16"),  # played 3 rounds
    ([[["dog", 1]], 60, True], r"max_interactions true,"),  # played 1 round
])
def test_a_samples_answer_the_framework_cannot_play_is_one_error(body, expected):
    answer = _response(200, json.dumps(body).encode(), url=SAMPLES)
    with pytest.raises(RemoteServerError, match=f"answered GET {SAMPLES} with .*{expected}"):
        handle_response(_Connector(), answer, raise_error=True)


@pytest.mark.parametrize("name", ["a" * 5000, "a/" * 2500, "\u00e9" * 128])
def test_a_sequence_name_no_folder_can_have_is_one_short_error(name):
    # A 5000-character name was a 5000-character "File name too long" line (its frames' folder, JPEGImages/480p/<name>).
    answer = _response(200, json.dumps([[["dog", 1], [name, 1]], 60, 2]).encode(), url=SAMPLES)
    with pytest.raises(RemoteServerError, match=f"answered GET {SAMPLES} with a sample of sequence '{name[:10]}") \
            as error:
        handle_response(_Connector(), answer, raise_error=True)
    assert len(str(error.value)) < 300 and f"... ({len(name)} characters)" in str(error.value)
    assert ("not a folder name" if "/" in name else "a name longer than a folder's 255 bytes") in str(error.value)
    longest = "\u00e9" * 127 + "a"  # 255 bytes in UTF-8: a folder may have it
    assert handle_response(_Connector(), _response(200, json.dumps([[[longest, 1]], 60, 2]).encode(), url=SAMPLES)) \
        is False


def test_good_samples_and_other_answers_pass():
    for body in ([[["dog", 1], ["dog", 2]], 30, 8], [[["dog", 1]], None, None]):  # null: the client's setting
        assert handle_response(_Connector(), _response(200, json.dumps(body).encode(), url=SAMPLES)) is False
    report = _response(200, b'{"sequence": []}', url="http://server/api/evaluation/report")
    assert handle_response(_Connector(), report) is False
    for path, body in (("report", b'"x"'), ("finish", b"[1, 2]")):
        answer = _response(200, body, url=f"http://server/api/evaluation/{path}")
        with pytest.raises(RemoteServerError, match="not a (table|JSON object)"):
            handle_response(_Connector(), answer)


def test_a_report_without_its_columns_is_one_error_and_an_empty_one_has_them(monkeypatch):
    import pandas as pd

    answers = iter([pd.DataFrame({"x": [1, 2]}), pd.DataFrame()])  # rows without columns; `{}`: no round yet
    monkeypatch.setitem(remote_compat._framework_methods, "get_report", lambda self: next(answers))
    with pytest.raises(RemoteServerError, match="answered the report without column.*sequence"):
        remote_compat.get_report(_Connector())  # a KeyError in the session's interaction log before
    empty = remote_compat.get_report(_Connector())
    assert len(empty) == 0 and {"sequence", "scribble_idx", "interaction", "jaccard"} <= set(empty.columns)


def _report(**changes) -> dict:
    """A report answer (the local server's shape: a list per column) of two rows, with `changes`."""
    from davisinteractive.storage.abstract import AbstractStorage

    row = {"session_id": "s", "sequence": "dog", "scribble_idx": 1, "interaction": 1, "object_id": 1, "frame": 0,
           "jaccard": 0.5, "contour": 0.4, "j_and_f": 0.45, "timing": 2.0}
    assert set(row) == set(AbstractStorage.COLUMNS)
    return {column: changes.get(column, [value, value]) for column, value in row.items()}


@pytest.mark.parametrize("body, expected", [
    # pandas' own messages, naming no server, exit 2, and the summary written without figures.
    (_report(jaccard=[0.5]), r"something that is not a table: All arrays must be of the same length"),
    ({"a": 1, "b": 2}, r"something that is not a table: If using all scalar values"),
    (_report(jaccard=["abc", 0.5]), r"jaccard 'abc' in row 0, not a finite number in 0..1"),
    (_report(timing=[2.0, None]), r"timing nan in row 1, not a finite number in 0..inf"),
    # Scored: AUC nan and J@60 inf, exit 0.
    (_report(jaccard=[0.5, float("inf")]), r"jaccard inf in row 1"),
    (_report(timing=[-5.0, 2.0]), r"timing -5.0 in row 0"),
])
def test_a_report_of_values_the_summary_cannot_score_is_one_error(monkeypatch, body, expected):
    import pandas as pd

    monkeypatch.setitem(remote_compat._framework_methods, "get_report", lambda self: pd.DataFrame.from_dict(body))
    with pytest.raises(RemoteServerError, match=f"server http://server answered the report with {expected}"):
        remote_compat.get_report(_Connector())
    monkeypatch.setitem(remote_compat._framework_methods, "get_report", lambda self: pd.DataFrame.from_dict(_report()))
    assert len(remote_compat.get_report(_Connector())) == 2


@pytest.mark.parametrize("changes, expected", [
    # Left out of the summary without a word: a report of none of the session's rounds was AUC 0.000, exit 0.
    ({"sequence": ["dog", "cat"]}, r"row 1 \('cat' #1 interaction 1, object 1, frame 0\) of a sample this session "
                                   "did not play"),
    ({"scribble_idx": [1, 2]}, r"row 1 \('dog' #2 .* of a sample this session did not play"),
    ({"interaction": [10**9, 1]}, r"row 0 \('dog' #1 interaction 1000000000, .* of a round this session did not "
                                  "submit"),
    ({"interaction": [1, 1.5]}, r"row 1 .* of a round this session did not submit"),
    ({"object_id": [1, 10**9]}, r"row 1 .*object 1000000000, frame 0\) of an object its video does not have"),
    ({"frame": [0, 10**9]}, r"row 1 .*frame 1000000000\) of a frame its video does not have"),
])
def test_a_report_of_rounds_the_session_never_sent_is_one_error(monkeypatch, changes, expected):
    import pandas as pd

    monkeypatch.setitem(remote_compat._framework_methods, "get_report",
                        lambda self: pd.DataFrame.from_dict(_report(**changes)))
    with pytest.raises(RemoteServerError, match=f"server http://server answered the report with {expected}"):
        remote_compat.get_report(_Connector())


def _listening(answer=None) -> socket.socket:
    """A socket listening on a free port of 127.0.0.1, which accepts connections and never answers; with
    `answer`, a thread accepts one connection, reads the request and calls answer(connection) (then closes it)."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    if answer is not None:
        def serve():
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                answer(connection)

        threading.Thread(target=serve, daemon=True).start()
    return listener


def test_refused_connection_is_one_error_naming_the_request():
    remote_compat.configure(connect_timeout=5.0, read_timeout=5.0, retries=0)
    with _listening() as probe:  # closed: nothing listens on its port
        port = probe.getsockname()[1]
    with pytest.raises(ServerUnavailableError, match=f"GET http://127.0.0.1:{port}/api/x: Connection refused"):
        remote_compat.guarded_session().get(f"http://127.0.0.1:{port}/api/x")


def test_a_server_that_closes_the_connection_unanswered_is_named_so():
    """It was "...: ConnectionError" (a server gone away mid-request), saying nothing of what happened."""
    remote_compat.configure(connect_timeout=5.0, read_timeout=5.0, retries=0)
    with _listening(answer=lambda connection: None) as closing:
        with pytest.raises(ServerUnavailableError, match=r"GET .*/api/x: Remote end closed connection without response$"):
            remote_compat.guarded_session().get(f"http://127.0.0.1:{closing.getsockname()[1]}/api/x")


def test_every_request_has_a_read_timeout():
    """A server that accepts connections and never answers: the request ends after read_timeout."""
    remote_compat.configure(connect_timeout=5.0, read_timeout=0.2, retries=0)
    with _listening() as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/dataset/samples"
        with pytest.raises(ServerUnavailableError, match=r"GET .*/api/dataset/samples: no answer within 0.2 s"):
            remote_compat.guarded_session().get(url)


def _answering_slowly(body_chunks) -> socket.socket:
    """A server that answers one request with headers, then the body `body_chunks` yields, as it yields it."""
    def answer(connection):
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")
        try:
            for chunk in body_chunks():
                connection.sendall(chunk)
        except OSError:  # the client gave up: what the test wants
            pass

    return _listening(answer)


def test_an_answer_that_trickles_or_never_ends_is_one_error(monkeypatch):
    """The read timeout holds per read: a byte every 0.05 s held the session for ever; an endless body filled the
    memory."""
    import time

    def trickle():
        while True:
            yield b" "
            time.sleep(0.05)

    remote_compat.configure(connect_timeout=5.0, read_timeout=0.5, retries=0)
    with _answering_slowly(trickle) as listener:
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match=r"GET .*/api/x: its answer did not arrive within 0.5 s"):
            remote_compat.guarded_session().get(f"http://127.0.0.1:{listener.getsockname()[1]}/api/x")
        assert time.monotonic() - started < 5
    monkeypatch.setattr(remote_compat, "MAX_ANSWER_BYTES", 2**20)  # 256 MB in earnest
    remote_compat.configure(connect_timeout=5.0, read_timeout=30.0, retries=0)
    with _answering_slowly(lambda: iter(lambda: b"[" * 2**16, None)) as listener:
        with pytest.raises(RemoteServerError, match=r"answered GET .*/api/x with more than 1 MB"):
            remote_compat.guarded_session().get(f"http://127.0.0.1:{listener.getsockname()[1]}/api/x")


def test_a_redirect_to_another_host_does_not_carry_the_user_key():
    # requests strips only Authorization there: a server redirecting to another host was sent the user's key.
    session = remote_compat.guarded_session()
    first = requests.Request("GET", "http://server.example/api/x", headers={"User-Key": "k", "Session-Key": "s"}).prepare()
    response = requests.Response()
    response.request = first
    for url, kept in (("http://elsewhere.example/x", False), ("http://server.example/api/y", True)):
        redirected = first.copy()
        redirected.prepare_url(url, None)
        session.rebuild_auth(redirected, response)
        assert ("User-Key" in redirected.headers) == kept and redirected.headers["Session-Key"] == "s"


def test_a_servers_retry_after_is_honoured_up_to_the_read_timeout(monkeypatch):
    """A 503 with `Retry-After: 3600` (or a date in 2100) made urllib3 sleep an hour (six) per retry, without a line."""
    import http.server
    import threading

    import urllib3.util.retry

    answers = iter([(503, "3600"), (503, "Fri, 31 Dec 2100 23:59:59 GMT"), (200, None)])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, retry_after = next(answers)
            self.send_response(status)
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    slept, sleep, this_thread = [], urllib3.util.retry.time.sleep, threading.get_ident()
    # time.sleep is every thread's: an earlier test's server thread may still sleep in it.
    monkeypatch.setattr(urllib3.util.retry.time, "sleep",
                        lambda seconds: slept.append(seconds) if threading.get_ident() == this_thread else sleep(seconds))
    remote_compat.configure(connect_timeout=5.0, read_timeout=7.0, retries=3)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            response = remote_compat.guarded_session().get(f"http://127.0.0.1:{server.server_address[1]}/api/x")
        finally:
            server.shutdown()
    assert response.status_code == 200 and slept == [7.0, 7.0]
