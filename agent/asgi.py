"""What both HTTP servers (the browser app, the local evaluation server) share: a request body that stops
arriving is answered 408 (uvicorn has no such limit: the request held its connection for ever).

Plain ASGI, no FastAPI import: each server passes its own error answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# A client whose body stops arriving mid-request is answered 408 after this many seconds without a byte.
BODY_TIMEOUT_SECONDS = 60.0


class BodyStalled(Exception):
    """Nothing of the request body arrived for BODY_TIMEOUT_SECONDS (raised by the receive BodyTimeout passes on)."""


class BodyTimeout:
    """ASGI middleware: while a request's body is still coming, each wait for its next part is limited to
    BODY_TIMEOUT_SECONDS; a body that stops arriving (declared and never sent, or a chunked one left open) is
    answered `respond(message)` (an ASGI app: the server's own 408) and the connection is closed. Once the body
    is complete, receive is passed on as it is (waiting for a disconnect is not a stall)."""

    def __init__(self, app, respond: Callable[[str], object]) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done, started = False, False
        seconds = BODY_TIMEOUT_SECONDS

        async def timed_receive():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), seconds)
            except TimeoutError:
                raise BodyStalled(f"the request body stopped arriving (nothing for {seconds:g} s)") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyStalled as stalled:
            if started:  # an answer is on its way already: the connection can only be dropped
                raise
            answer = self.respond(str(stalled))
            answer.headers["connection"] = "close"  # the rest of the body, should it come, is no request
            await answer(scope, receive, send)
