"""Where the process is in its life: serving, draining after SIGTERM, or failed for good.

Shared by the HTTP app (``/health``, ``/ready``, 503 on new jobs), the engine (which reports a fatal
failure) and the runner in ``server.serving`` (which turns a drain into an exit after the grace and a
failure into a non-zero exit status). Liveness and readiness are different questions: a draining
server is alive but not ready; a failed one is neither, and exits so that a supervisor restarts it.
Before it exits, a failed server drains like a SIGTERM'd one and keeps answering ``/health`` with 503
for at least ``failed_linger_s``: a process that vanished within milliseconds of its failure would
show probes and load balancers a refused connection, never the failure and its reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("nrg.server")

#: Exit status of ``nrg serve`` when the worker or the store failed for good.
EXIT_FAILED = 1
#: How long a failed server keeps answering (``/health`` 503) before it exits; a signal cuts it short.
FAILED_LINGER_S = 5.0


class Lifecycle:
    def __init__(self, shutdown_grace_s: float, failed_linger_s: float = FAILED_LINGER_S) -> None:
        self.shutdown_grace_s = shutdown_grace_s
        self.failed_linger_s = failed_linger_s
        self.failure: str | None = None
        self.exit_code = 0
        #: Set by the runner: ask the HTTP server to shut down (gracefully) now.
        self.request_exit: Callable[[], None] | None = None
        self._drain_deadline: float | None = None
        self._exit_now = threading.Event()
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
        once with a shared store) and for the failed server's linger."""
        with self._lock:
            self._drain_deadline = time.monotonic()
        self._exit_now.set()

    def linger(self, until: float) -> None:
        """Keep the process up until the monotonic time ``until``, or until ``end_grace``."""
        self._exit_now.wait(max(0.0, until - time.monotonic()))

    def remaining_grace(self) -> float:
        """Seconds the running batch may still take: the whole grace unless a drain already spent some."""
        if self._drain_deadline is None:
            return self.shutdown_grace_s
        return max(0.0, self._drain_deadline - time.monotonic())

    def fail(self, reason: str) -> None:
        """The server cannot go on: report it on /health and exit non-zero (via the runner, if any, which
        drains first and lingers ``failed_linger_s``)."""
        log.error("fatal: %s", reason)
        self.failure = reason
        self.exit_code = EXIT_FAILED
        if self.request_exit is not None:
            log.error("answering /health with 503 for %g s, then exiting with status %d for a supervisor to "
                      "restart the server", self.failed_linger_s, EXIT_FAILED)
            self.request_exit()
