"""The deliverer: threads that POST each finished job's webhook until it is delivered or given up.

The store is the queue (``server.store.webhook_rows``): the statement that finishes a job makes its
webhook due, so what a deliverer works from survives a ``kill -9`` and is shared by every process of
a scaled-out deployment. One thread claims due webhooks (as many as there are idle senders, polling
every ``poll_s`` when there are none), a few sender threads attempt them: neither the engine's thread
nor an HTTP handler ever waits on a receiver.

An attempt delivers on a 2xx. A 410 Gone, or a URL the rules no longer allow, fails the webhook at
once; any other answer, a timeout or a connection error is retried after the next wait of
``--webhook-backoff``, until the attempts are used up. At least once: a receiver may see an event
again (a process killed after the receiver answered, before the store heard of it), always with the
same ``webhook-id``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from server.metrics import Metrics
from server.store import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING, Job, Store, StoreError
from server.webhooks.allow_rules import WebhookPolicy, WebhookRefused, WebhookUnresolved
from server.webhooks.payload import event_body, event_type, message_id
from server.webhooks.sender import WebhookSender
from server.webhooks.settings import WebhookSettings
from server.webhooks.signing import secret_key, signed_headers

log = logging.getLogger("nrg.webhooks")
#: The video object of a job, as ``GET /v1/videos/{id}`` answers it.
Render = Callable[[Job], dict[str, Any]]


class WebhookDeliverer:
    def __init__(self, settings: WebhookSettings, store: Store, metrics: Metrics, worker: str, render: Render,
                 policy: WebhookPolicy | None = None) -> None:
        self.settings, self.store, self.metrics, self.worker, self.render = settings, store, metrics, worker, render
        self.policy = policy or WebhookPolicy(settings.allow, settings.timeout_s)
        self._key = secret_key(settings.secret) if settings.enabled else b""
        self._sender = WebhookSender(settings.timeout_s)
        self._claimed: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._busy = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Claiming fails (the store is out): logged once, not at every poll.
        self._failing = False

    def start(self) -> None:
        """Start delivering (nothing when webhooks are off: what is due stays in the store)."""
        if not self.settings.enabled:
            return
        try:
            recovered = self.store.recover_webhooks(self.worker)
        except StoreError as exc:  # they come due anyway once their lease runs out
            log.warning("webhooks: could not take back the attempts the last stop cut off (%s)", exc)
            recovered = 0
        if recovered:
            log.info("%d webhook attempt(s) cut off by the last stop are due again", recovered)
        self._threads = [threading.Thread(target=self._claim_loop, name="nrg-webhooks", daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, name=f"nrg-webhook-{i}", daemon=True)
                          for i in range(self.settings.concurrency)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; attempts in flight get ``timeout_s`` to end (one cut off is due again at the next
        start, or after its lease on another process)."""
        self._stop.set()
        self._wake.set()
        for _ in self._threads[1:]:
            self._claimed.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._sender.close()

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                idle = self.settings.concurrency - self._busy
            claimed: list[Job] = []
            try:
                claimed = self.store.claim_webhooks(self.worker, idle, self.settings.lease_s) if idle else []
                if self._failing:
                    log.info("webhooks: the store answers again")
                self._failing = False
            except StoreError as exc:
                if not self._failing:
                    log.warning("webhooks: claiming from the store failed (%s); retrying every %g s", exc,
                                self.settings.poll_s)
                self._failing = True
            except Exception:  # noqa: BLE001 - the claiming thread must outlive any one bad round
                log.exception("webhooks: claim round failed")
            with self._lock:
                self._busy += len(claimed)
            for job in claimed:
                self._claimed.put(job)
            if len(claimed) < idle or not idle:
                self._wake.wait(self.settings.poll_s)
                self._wake.clear()

    def _send_loop(self) -> None:
        while (job := self._claimed.get()) is not None:
            try:
                if not self._stop.is_set():  # else its claim is due again at the next start
                    self.attempt(job)
            except Exception:  # noqa: BLE001 - a failed round leaves the claim to run out; it is retried then
                log.exception("webhooks: attempt for %s failed", job.id)
            finally:
                with self._lock:
                    self._busy -= 1
                self._wake.set()

    def attempt(self, job: Job) -> str:
        """One attempt at ``job``'s webhook (claimed by this deliverer); the status it recorded."""
        attempt = job.webhook.attempts
        try:
            destination = self.policy.check(job.spec.webhook_url)
            body = event_body(job, self.render(job))
            headers = signed_headers(self._key, message_id(job), int(time.time()), body)
            code = self._sender.post(destination, body, headers)
        except WebhookRefused as exc:
            return self._record(job, attempt, WEBHOOK_FAILED, f"refused: {exc}")
        except WebhookUnresolved as exc:
            return self._record(job, attempt, WEBHOOK_PENDING, str(exc))
        except httpx.TimeoutException as exc:
            return self._record(job, attempt, WEBHOOK_PENDING, f"timed out ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return self._record(job, attempt, WEBHOOK_PENDING, f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= code < 300:
            return self._record(job, attempt, WEBHOOK_DELIVERED, None)
        if code == 410:
            return self._record(job, attempt, WEBHOOK_FAILED, "HTTP 410 Gone: the receiver asked for no more")
        redirect = " (redirects are not followed)" if 300 <= code < 400 else ""
        return self._record(job, attempt, WEBHOOK_PENDING, f"HTTP {code}{redirect}")

    def _record(self, job: Job, attempt: int, status: str, error: str | None) -> str:
        """Write the attempt's outcome: a retry past the last attempt fails the webhook."""
        retry_in_s = None
        if status == WEBHOOK_PENDING:
            if attempt >= self.settings.attempts:
                status, error = WEBHOOK_FAILED, f"{error}; gave up after {attempt} attempts"
            else:
                retry_in_s = self.settings.backoff_s[attempt - 1]
        if not self.store.record_webhook(job.id, self.worker, attempt, status, error, retry_in_s):
            log.info("webhook of %s: attempt %d not recorded (the job was deleted, or its claim lapsed)", job.id,
                     attempt)
            return status
        outcome = {WEBHOOK_PENDING: "retried", WEBHOOK_DELIVERED: "delivered", WEBHOOK_FAILED: "failed"}[status]
        self.metrics.webhook_deliveries.labels(outcome=outcome).inc()
        if status == WEBHOOK_DELIVERED:
            log.info("webhook %s of %s delivered (attempt %d)", event_type(job), job.id, attempt,
                     extra={"job": job.id, "event": "webhook_delivered"})
        else:
            retry = f"; retrying in {retry_in_s:g} s" if retry_in_s is not None else ""
            log.warning("webhook %s of %s, attempt %d: %s%s", event_type(job), job.id, attempt, error, retry,
                        extra={"job": job.id, "event": f"webhook_{outcome}"})
        return status
