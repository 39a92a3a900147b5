"""Run the app under uvicorn with a draining SIGTERM and an exit status that tells the truth.

uvicorn closes its listener the moment SIGTERM arrives, so load balancers and probes see connection
errors instead of the 503s the API promises. Here the first SIGTERM (or Ctrl-C) only starts a drain:
the server keeps answering (new jobs and ``/ready`` get 503 with ``Retry-After``), the running batch
finishes, and uvicorn is told to exit once it has or the shutdown grace is spent. Jobs still queued
stay queued in the store for the next start. A second signal exits at once. A fatal failure (see
``server.lifecycle``) drains the same way, and the listener stays open for the lifecycle's
``failed_linger_s`` so that ``/health`` can answer 503; ``run`` then returns a non-zero exit status.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from server.read_timeouts import bounded_protocol

if TYPE_CHECKING:
    from server.runtime import ServerRuntime

log = logging.getLogger("nrg.server")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.runtime: ServerRuntime = app.state.runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        lifecycle = self.runtime.lifecycle
        if sig in DRAIN_SIGNALS and lifecycle.begin_drain():
            log.info("signal %d: draining (new jobs get 503) for up to %g s; signal again to exit at once",
                     sig, lifecycle.shutdown_grace_s)
            self._start_drain(linger_s=0.0)
            return
        lifecycle.end_grace()
        super().handle_exit(sig, frame)

    def failed(self) -> None:
        """The lifecycle's failure: drain, keep answering (/health 503) for its linger, then exit. A drain
        already under way (after a signal) ends the process as it would, now with the failure's status."""
        lifecycle = self.runtime.lifecycle
        if lifecycle.begin_drain():
            self._start_drain(linger_s=lifecycle.failed_linger_s)

    def _start_drain(self, linger_s: float) -> None:
        threading.Thread(target=self._drain, args=(linger_s,), name="nrg-drain", daemon=True).start()

    def _drain(self, linger_s: float) -> None:
        lifecycle, engine = self.runtime.lifecycle, self.runtime.engine
        started = time.monotonic()
        if not engine.stop(lifecycle.remaining_grace()):
            log.warning("shutdown grace elapsed; the running jobs go back to the queue (with a shared store at "
                        "once, else at the next start)")
        lifecycle.linger(started + linger_s)
        self.should_exit = True


def uvicorn_config(app: FastAPI, host: str, port: int,
                   log_config: dict[str, Any] | None | str = uvicorn.config.LOGGING_CONFIG) -> uvicorn.Config:
    """uvicorn's settings for ``nrg serve``: slow clients bounded (``server.read_timeouts``)."""
    return uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5, log_level="info",
                          log_config=log_config, http=bounded_protocol())


def run(app: FastAPI, host: str, port: int, sock: socket.socket | None = None,
        log_config: dict[str, Any] | None | str = uvicorn.config.LOGGING_CONFIG) -> int:
    """Serve until drained, interrupted or failed; the process exit status. ``sock``: already bound
    (``server.listen.bind``); ``log_config=None`` leaves logging as ``server.log_format`` set it."""
    server = DrainingServer(uvicorn_config(app, host, port, log_config), app)
    lifecycle = server.runtime.lifecycle
    lifecycle.request_exit = server.failed
    server.run(sockets=None if sock is None else [sock])
    return lifecycle.exit_code
