"""What both HTTP servers (the browser app, the local evaluation server) share: a request body that stops
arriving is answered 408, and so are request headers that take too long (uvicorn has no such limits: either
held its connection for ever); a request whose Host is not this machine (a DNS-rebinding page) is refused.

Plain ASGI, no FastAPI import: each server passes its own error answer.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# A client whose body stops arriving mid-request is answered 408 after this many seconds without a byte.
BODY_TIMEOUT_SECONDS = 60.0
# A request's headers must be complete this many seconds after its connection opened or its last answer was sent.
HEADER_TIMEOUT_SECONDS = 60.0


def foreign_host(host: str) -> str | None:
    """Why a request's Host header does not name this machine (an IP address, localhost or its host name), or None.
    Both servers listen on this machine only, but a page on any site the user visits can reach them by DNS
    rebinding (its own name resolved to 127.0.0.1): its requests then carry that name as Host."""
    try:  # urlsplit raises ValueError for a malformed address ("[::1" as Host): it was a 500
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        name = ""
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        if name == "localhost" or name in _machine_names():
            return None
    return f"Host {host!r} is not this machine: use the address the server printed when it started"


@functools.cache
def _machine_names() -> tuple[str, ...]:
    return socket.gethostname().lower(), socket.getfqdn().lower()  # getfqdn may ask DNS: once


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol (`uvicorn.Config(http=HeaderTimeoutProtocol)`) with a limit on the time a request's
    headers take: uvicorn times only an idle connection after an answer (`timeout_keep_alive`), and its first
    byte stops that clock, so headers sent a byte at a time (or a connection opened and left silent) held their
    connection for ever. When HEADER_TIMEOUT_SECONDS pass before the headers are complete, a connection that
    sent part of them is answered 408 and closed; one that sent nothing since its last answer is closed. Their
    size is h11's limit (16 kB, a 400 past it); the body is BodyTimeout's."""

    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or the request failed): no longer timed
            self._stop_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:  # the next request's headers
            self._time_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _time_headers(self) -> None:
        self._stop_header_timer()
        self.header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it is dropped
            message = f"the request headers did not arrive within {HEADER_TIMEOUT_SECONDS:g} s".encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message))
        self.transport.close()


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
