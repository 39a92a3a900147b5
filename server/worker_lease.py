"""A worker's side of a shared store: its jobs' leases, cancellations from other front ends, the queue.

A thread beside the engine (it keeps beating while the device thread is inside a long step). Every
``interval_s`` (at most 0.5 s, and a quarter of the lease) it:

* renews the leases of the jobs this worker holds (running, or being encoded by the writer), and
  asks the engine (``Engine.cancel`` -> ``CancelRequests``) to stop, at their next step, the ones the
  store says are no longer its own: cancelled or deleted by a DELETE on any front end, or taken over
  by another worker after this one's lease expired;
* re-queues jobs whose lease expired (their worker died: ``kill -9``, a lost machine); any worker
  may do it, the statement is idempotent. Once this worker's heartbeats failed, not until one lease
  after they reach the store again: an outage of the store (a PostgreSQL restart, a failover) cuts
  every worker off at once, so every lease runs out meanwhile, and the workers still alive renew
  theirs within a beat of reconnecting; re-queueing their jobs first would run them twice;
* wakes the engine when jobs of its models are queued (they were created by another process, whose
  ``Engine.wake`` is not this one).

Store faults here are logged and retried at the next beat; the engine meets them on its own writes.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from server.store import Store, StoreError

log = logging.getLogger("nrg.worker")


class LeaseKeeper:
    def __init__(self, store: Store, engine, worker: str, lease_s: float) -> None:
        if not lease_s > 0:
            raise ValueError(f"--lease-s must be > 0; got {lease_s}")
        self.store, self.engine, self.worker, self.lease_s = store, engine, worker, lease_s
        self.interval_s = min(0.5, lease_s / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nrg-lease", daemon=True)
        self._failing = False
        #: Monotonic time before which expired leases are left alone (after failed beats: one lease
        #: after the first that succeeds again).
        self._reap_after = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def beat(self) -> None:
        """One round (also called by tests)."""
        lost = self.store.heartbeat(self.worker, self.engine.held_job_ids(), self.lease_s)
        for job_id in sorted(lost):
            log.info("job %s was cancelled, deleted or taken over elsewhere; stopping it at its next step", job_id)
            self.engine.cancel(job_id)
        expired = self.store.requeue_expired() if time.monotonic() >= self._reap_after else []
        for job_id in expired:
            log.warning("re-queued %s: its worker's lease expired", job_id)
        if expired or self.store.count_queued(self.engine.models):
            self.engine.wake()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
                if self._failing:
                    log.info("worker %s: heartbeats reach the store again; re-queueing expired leases in %g s",
                             self.worker, self.lease_s)
                    self._reap_after = time.monotonic() + self.lease_s
                self._failing = False
            except StoreError as exc:
                self._reap_after = math.inf
                if not self._failing:
                    log.warning("worker %s: heartbeat failed (%s); retrying every %g s", self.worker, exc,
                                self.interval_s)
                self._failing = True
            except Exception:  # noqa: BLE001 - the lease thread must outlive any one bad round
                log.exception("worker %s: heartbeat round failed", self.worker)
