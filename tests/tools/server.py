"""The page's server in a background thread, as `python -m agent.app` runs it, on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

STARTUP_SECONDS = 30
JOB_SECONDS = 300


@contextmanager
def serve(app) -> Iterator[str]:
    import uvicorn

    from agent.asgi import HeaderTimeoutProtocol

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           http=HeaderTimeoutProtocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app's server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_for_job(base: str) -> dict:
    """The state once the running job (if any) has finished."""
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        state = requests.get(f"{base}/api/state", timeout=10).json()
        if state["job"] is None or state["job"]["finished"]:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"job still running after {JOB_SECONDS} s: {state['job']}")
        time.sleep(0.1)
