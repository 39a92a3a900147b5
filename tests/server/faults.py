"""Deterministic faults for the server tests: failing SQLite statements and misbehaving pipelines.

Disk errors are injected at the store's connection, never with ``ulimit``: a ``FaultyConnection``
raises the given error for the next ``times`` statements that match, then behaves.
"""

from __future__ import annotations

import sqlite3
import threading

import torch

from guidance.families.wan import WanFamily

#: Substrings that pick one store statement each (see ``server.store.sqlite``).
CLAIM = "attempts = attempts + 1"
FINISH = "completed_at = ?"
CREATE = "INSERT INTO jobs"
READ = "SELECT"


class FaultyConnection:
    """Wraps a store's ``sqlite3.Connection``: statements containing ``match`` raise ``error``."""

    def __init__(self, db: sqlite3.Connection, match: str, times: int, error: sqlite3.Error) -> None:
        self.db, self.match, self.times, self.error = db, match, times, error
        self.raised = 0

    def execute(self, sql: str, args: tuple = ()):
        if self.match in sql and self.times > 0:
            self.times -= 1
            self.raised += 1
            raise self.error
        return self.db.execute(sql, args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def inject(store, match: str, times: int = 10**9, error: sqlite3.Error | None = None) -> FaultyConnection:
    """Make the next ``times`` statements of ``store`` that contain ``match`` fail (disk I/O error)."""
    store.retry_delays_s = (0.0, 0.0, 0.0)
    faulty = FaultyConnection(store._db, match, times, error or sqlite3.OperationalError("disk I/O error"))
    store._db = faulty
    return faulty


def heal(store) -> None:
    if isinstance(store._db, FaultyConnection):
        store._db = store._db.db


class HeldDecodeWan(WanFamily):
    """Stops right after the last denoising step, before decoding, until the test releases it."""

    def __init__(self, pipe) -> None:
        super().__init__(pipe)
        self.decoding = threading.Event()
        self.release = threading.Event()

    def decode(self, latents, shape, generators):
        self.decoding.set()
        if not self.release.wait(600):  # only a hang guard
            raise TimeoutError("the test never released the decode")
        return super().decode(latents, shape, generators)


class HeldStepWan(WanFamily):
    """Holds its first denoising step until the test releases it: a batch that is certainly running
    while the test queues more jobs, however slow or fast the machine."""

    def __init__(self, pipe) -> None:
        super().__init__(pipe)
        self.stepping = threading.Event()
        self.release = threading.Event()

    def predict(self, model, latents, *args, **kwargs):
        self.stepping.set()
        if not self.release.wait(600):  # only a hang guard
            raise TimeoutError("the test never released the step")
        return super().predict(model, latents, *args, **kwargs)
