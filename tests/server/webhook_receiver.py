"""A webhook receiver for the tests: an HTTP server on a free loopback port, in a thread, that records
every request and answers as the test scripts it (a status, or holding the request until released)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.server.conftest import HANG_S


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        """The body as JSON, unverified (tests verify with ``nrg_client.verify_webhook``)."""
        return json.loads(self.body)


#: ``answer(request, nth)``: the status for a request, ``nth`` counting the requests to its path from 1;
#: None holds it until ``Receiver.release`` (then 503).
Answer = Callable[[Received, int], int | None]


class Receiver:
    def __init__(self, answer: Answer = lambda request, nth: 204) -> None:
        self.answer = answer
        self.received: list[Received] = []
        #: Set while a request is held.
        self.holding = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(request)
                    nth = sum(r.path == self.path for r in receiver.received)
                status = receiver.answer(request, nth)
                if status is None:
                    receiver.holding.set()
                    if not receiver._released.wait(HANG_S):  # only a hang guard
                        raise TimeoutError("the test never released the held webhook")
                    status = 503
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender is gone (killed while it waited): nobody to answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        """Answer the held requests, and any the script holds from now on, with 503."""
        self._released.set()

    def to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]
