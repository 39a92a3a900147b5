"""Job events across processes over PostgreSQL ``LISTEN`` / ``NOTIFY``.

Whoever publishes an event (a worker: started, step, completed, failed; a front end: queued,
cancelled) sends ``NOTIFY nrg_events, '{"id", "kind", "data"}'`` through its store
(:class:`NotifyingEvents`, an ``EventSink``). Every front end runs an :class:`EventListener`: one
connection that ``LISTEN``s and feeds the process's own :class:`server.events.EventBus`, from which
SSE subscribers read, whichever worker runs the job.

A payload must stay under PostgreSQL's 8000-byte limit: an event whose data is larger is sent with
its data cut to ``{"partial": true}``, and the listener fills a terminal event in from the job's row.
Events are advisory: one lost while a connection was down is not retried, since the row is the truth
(the SSE route reads it for a late subscriber, and again at every keep-alive).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from server.events import TERMINAL, EventBus, Listener
from server.store import StoreError
from server.store.postgres import EVENT_CHANNEL, PostgresJobStore

log = logging.getLogger("nrg.events")

#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900


def encode(job_id: str, kind: str, data: dict[str, Any]) -> str:
    payload = json.dumps({"id": job_id, "kind": kind, "data": data}, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        payload = json.dumps({"id": job_id, "kind": kind, "data": {"partial": True}}, separators=(",", ":"))
    return payload


class NotifyingEvents:
    """An ``EventSink`` that publishes with NOTIFY (and calls this process's ``listeners``, the job log)."""

    def __init__(self, store: PostgresJobStore, channel: str = EVENT_CHANNEL,
                 listeners: tuple[Listener, ...] = ()) -> None:
        self.store, self.channel, self.listeners = store, channel, listeners
        self._warned = 0.0

    def publish(self, job_id: str, kind: str, **data: Any) -> None:
        try:
            self.store.notify(self.channel, encode(job_id, kind, data))
        except StoreError as exc:  # advisory: the outcome is in the row, which the caller writes anyway
            if time.monotonic() - self._warned > 10:
                self._warned = time.monotonic()
                log.warning("could not publish %s of %s: %s", kind, job_id, exc)
        for listener in self.listeners:
            try:
                listener(job_id, kind, {"id": job_id, **data})
            except Exception:  # noqa: BLE001 - a listener must never fail the job it reports
                log.exception("event listener %r failed on %s %s", listener, kind, job_id)


class EventListener:
    """The front end's LISTEN thread: NOTIFYs from every process into the local ``bus``."""

    def __init__(self, store: PostgresJobStore, bus: EventBus, channel: str = EVENT_CHANNEL,
                 reconnect_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)) -> None:
        self.store, self.bus, self.channel, self.reconnect_s = store, bus, channel, reconnect_s
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nrg-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._listening.wait(timeout)  # so that a job created right after start has its events heard

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with self.store.connect() as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self._listening.set()
                    if failures:
                        log.info("listening for job events again")
                    failures = 0
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke the connection
                if self._stop.is_set():
                    return
                delay = self.reconnect_s[min(failures, len(self.reconnect_s) - 1)]
                if failures == 0:
                    log.warning("job events: lost the LISTEN connection (%s); reconnecting", exc)
                failures += 1
                self._stop.wait(delay)

    def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            job_id, kind, data = message["id"], message["kind"], dict(message.get("data") or {})
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed job event: %.200s", payload)
            return
        if data.pop("partial", False) and kind in TERMINAL:
            try:
                job = self.store.get(job_id)
            except StoreError:
                job = None
            if job is not None:
                data = ({"error": {"code": job.error_code, "message": job.error_message}} if job.error_code
                        else dict(job.result))
        data.pop("id", None)
        self.bus.publish(job_id, kind, **data)
