"""Per-job progress events, from the worker thread to Server-Sent-Events subscribers.

The worker publishes from its own thread; each subscriber is an ``asyncio.Queue`` on the server's
event loop, fed with ``call_soon_threadsafe``. A job's events are kept until a while after it ends,
so a client that subscribes late (or reconnects) replays them in order before the live ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("nrg.server")
#: Called as ``listener(job_id, kind, data)`` for every recorded event, on the publishing thread.
Listener = Callable[[str, str, dict[str, Any]], None]

TERMINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Event:
    kind: str  # queued | started | step | completed | failed | cancelled
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


class EventSink(Protocol):
    """Where the engine reports job events; a deployment with the engine in another process can
    implement it over the shared store."""

    def publish(self, job_id: str, kind: str, **data: Any) -> None: ...


class EventBus:
    def __init__(self, keep_finished: int = 1000, listeners: tuple[Listener, ...] = ()) -> None:
        self._listeners = listeners
        self._lock = threading.Lock()
        self._history: OrderedDict[str, list[Event]] = OrderedDict()
        self._subscribers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._keep_finished = keep_finished

    def publish(self, job_id: str, kind: str, **data: Any) -> None:
        event = Event(kind, {"id": job_id, **data})
        with self._lock:
            history = self._history.setdefault(job_id, [])
            if history and history[-1].terminal:
                return
            history.append(event)
            self._history.move_to_end(job_id)
            while len(self._history) > self._keep_finished:
                self._history.popitem(last=False)
            subscribers = list(self._subscribers.get(job_id, ()))
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        for listener in self._listeners:
            try:
                listener(job_id, kind, event.data)
            except Exception:  # noqa: BLE001 - a listener (the job log) must never fail the job it reports
                log.exception("event listener %r failed on %s %s", listener, kind, job_id)

    def subscribe(self, job_id: str) -> tuple[list[Event], asyncio.Queue]:
        """The events so far and a queue of the ones to come (atomically: none lost, none twice)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            past = list(self._history.get(job_id, ()))
            self._subscribers.setdefault(job_id, []).append((asyncio.get_running_loop(), queue))
        return past, queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            subscribers = [s for s in self._subscribers.get(job_id, ()) if s[1] is not queue]
            if subscribers:
                self._subscribers[job_id] = subscribers
            else:
                self._subscribers.pop(job_id, None)
