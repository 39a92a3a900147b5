"""Where the process is in its life: serving, draining after SIGTERM, or failed for good.

Shared by the HTTP app (``/health``, ``/ready``, 503 on new jobs), the engine (which reports a fatal
failure) and the runner in ``server.serving`` (which turns a drain into an exit after the grace and a
failure into a non-zero exit status). Liveness and readiness are different questions: a draining
server is alive but not ready; a failed one is neither, and exits so that a supervisor restarts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("nrg.server")

#: Exit status of ``nrg serve`` when the worker or the store failed for good.
EXIT_FAILED = 1


class Lifecycle:
    def __init__(self, shutdown_grace_s: float) -> None:
        self.shutdown_grace_s = shutdown_grace_s
        self.failure: str | None = None
        self.exit_code = 0
        #: Set by the runner: ask the HTTP server to shut down (gracefully) now.
        self.request_exit: Callable[[], None] | None = None
        self._drain_deadline: float | None = None
        self._lock = threading.Lock()

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

    def begin_drain(self) -> bool:
        """Stop taking new jobs; True the first time (the grace starts now), False if already draining."""
        with self._lock:
            if self._drain_deadline is not None:
                return False
            self._drain_deadline = time.monotonic() + self.shutdown_grace_s
            return True

    def end_grace(self) -> None:
        """A second signal: stop waiting for the running batch (it is re-queued at the next start, or at
        once with a shared store)."""
        with self._lock:
            self._drain_deadline = time.monotonic()

    def remaining_grace(self) -> float:
        """Seconds the running batch may still take: the whole grace unless a drain already spent some."""
        if self._drain_deadline is None:
            return self.shutdown_grace_s
        return max(0.0, self._drain_deadline - time.monotonic())

    def fail(self, reason: str) -> None:
        """The server cannot go on: report it on /health and exit non-zero (via the runner, if any)."""
        log.error("fatal: %s", reason)
        self.failure = reason
        self.exit_code = EXIT_FAILED
        if self.request_exit is not None:
            log.error("exiting with status %d for a supervisor to restart the server", EXIT_FAILED)
            self.request_exit()
