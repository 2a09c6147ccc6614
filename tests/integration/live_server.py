"""The gateway app behind a real HTTP server in a thread, for tests that read streams live.

litestar's TestClient hands a streamed response over only once it is complete, so it cannot
show that Server-Sent Events arrive while a job runs, nor read an endless stream.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig

__all__ = ["served"]


@contextmanager
def served(config: GatewayConfig) -> Iterator[httpx.Client]:
    """The app behind a real HTTP server in a thread (the test client cannot stream endlessly)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
