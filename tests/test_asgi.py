"""BodyTimeout: only a body still coming is timed; after it, waiting (for a disconnect) is no stall."""

from __future__ import annotations

import asyncio

from agent import asgi


def test_only_a_body_still_coming_is_timed(monkeypatch):
    monkeypatch.setattr(asgi, "BODY_TIMEOUT_SECONDS", 0.05)
    messages, seen = [{"type": "http.request", "body": b"{}", "more_body": False}], []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(0.2)  # longer than the limit: a client that keeps its connection open
        return {"type": "http.disconnect"}

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        seen.append((await receive())["type"])

    def respond(message):
        raise AssertionError(f"answered {message!r}")

    asyncio.run(asgi.BodyTimeout(app, respond)({"type": "http", "headers": []}, receive, None))
    assert seen == [b"{}", "http.disconnect"]


def _serve_with_header_timeout(monkeypatch, seconds: float):
    """A bare app under uvicorn with HeaderTimeoutProtocol (headers limited to `seconds`), on a free port."""
    import contextlib
    import threading

    import uvicorn

    monkeypatch.setattr(asgi, "HEADER_TIMEOUT_SECONDS", seconds)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    @contextlib.contextmanager
    def running():
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                                               http=asgi.HeaderTimeoutProtocol))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.01)
        try:
            yield server.servers[0].sockets[0].getsockname()[:2]
        finally:
            server.should_exit = True
            thread.join(10)

    return running()


def _answer(address, data: bytes) -> bytes:
    import socket

    with socket.create_connection(address, timeout=10) as client:  # a connection held for ever: a timeout error
        client.sendall(data)
        return b"".join(iter(lambda: client.recv(4096), b""))  # until the server closes it


def test_headers_that_take_too_long_are_answered_408(monkeypatch):
    """Headers sent a byte at a time (or a silent connection) held their connection for ever: uvicorn times only
    an idle connection after an answer, and its first byte stopped that clock."""
    with _serve_with_header_timeout(monkeypatch, 0.2) as address:
        partial = _answer(address, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert partial.startswith(b"HTTP/1.1 408") and b"connection: close" in partial
        assert partial.endswith(b"the request headers did not arrive within 0.2 s")
        assert _answer(address, b"") == b""  # nothing sent: closed without an answer
        # The next request's headers on a kept-alive connection are timed too, after the first is answered.
        kept = _answer(address, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET / HT")
        assert kept.startswith(b"HTTP/1.1 200") and kept.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408" in kept


def test_headers_in_time_are_served(monkeypatch):
    with _serve_with_header_timeout(monkeypatch, 60.0) as address:
        answer = _answer(address, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
