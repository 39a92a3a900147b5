"""Retention: finished jobs expire ``--retention`` days after they finish, and a sweeper deletes their
files and rows, so the data directory stops growing without bound.

``expires_at = completed_at + retention`` is reported on every finished job. Between the expiry and
the next sweep, ``/content`` answers 410 ``video_expired``; after the sweep the job is gone (404).
Retention 0 keeps everything forever (``expires_at`` stays null).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.store import Job, Store

log = logging.getLogger("nrg.retention")

DAY_S = 86400.0
#: The sweeper runs this often at most (and at start): an hour late at worst for long retentions.
MAX_SWEEP_INTERVAL_S = 3600.0


class Retention:
    """When jobs expire and the thread that deletes them. ``clock`` is injectable for tests."""

    def __init__(self, store: Store, days: float, clock: Callable[[], float] = time.time) -> None:
        if not days >= 0:
            raise ValueError(f"retention must be >= 0 days; got {days}")
        self.store, self.clock = store, clock
        self.seconds = days * DAY_S
        self.interval_s = min(MAX_SWEEP_INTERVAL_S, max(self.seconds / 10, 0.05))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nrg-retention", daemon=True)

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def expires_at(self, job: Job) -> float | None:
        """When a finished job's files go away; None while it runs or with retention off."""
        if not self.enabled or job.completed_at is None:
            return None
        return job.completed_at + self.seconds

    def expired(self, job: Job) -> bool:
        expires = self.expires_at(job)
        return expires is not None and self.clock() >= expires

    def sweep(self) -> list[str]:
        """Delete every job (row and files) that finished more than the retention ago; their ids."""
        if not self.enabled:
            return []
        gone = self.store.finished_before(self.clock() - self.seconds)
        for job_id in gone:
            self.store.delete(job_id)
        if gone:
            log.info("retention: deleted %d expired job(s)", len(gone))
        return gone

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.exception("retention sweep failed")
            if self._stop.wait(self.interval_s):
                return
