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
