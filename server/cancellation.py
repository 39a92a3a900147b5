"""Where cancellations reach the engine: the HTTP handler asks, the engine takes them before a step.

An interface so that a deployment with the engine in another process can back it with the shared
store; this process's implementation is a set under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol


class CancelRequests(Protocol):
    def request(self, job_id: str) -> None:
        """Ask for a running job to stop at its next step boundary."""

    def take(self, job_ids: Iterable[str]) -> set[str]:
        """The requests for these jobs (the running ones). Requests for any other job are dropped:
        a queued job is cancelled in the store and never starts, a finished one needs no stopping."""


class LocalCancelRequests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested: set[str] = set()

    def request(self, job_id: str) -> None:
        with self._lock:
            self._requested.add(job_id)

    def take(self, job_ids: Iterable[str]) -> set[str]:
        with self._lock:
            taken, self._requested = self._requested & set(job_ids), set()
            return taken
