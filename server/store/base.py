"""The job store's interface, shared by its backends: the row (``Job``), the statuses and the methods
the HTTP handlers, the engine, the writer and the worker's lease keeper call.

Two backends implement it: :class:`server.store.sqlite.JobStore` (SQLite in ``--data-dir``, the
embedded default: one process) and :class:`server.store.postgres.PostgresJobStore` (``--store
postgresql://...``: several API and worker processes share it). Both keep the videos in
``DATA_DIR/videos``, which workers and front ends of a scaled-out deployment share.

A job is *claimed* by one worker (``claim``: queued -> in_progress, atomically across processes) and
held under a *lease* that the worker's heartbeat renews (``heartbeat``). A job whose lease expired (its
worker died or lost the store) goes back to the queue (``requeue_expired``) and runs again with the
same seed, so with the same result. The lease fences the outcome: a worker records a job's outcome
(``finish(..., worker=)``) only while nobody else holds it, so a job taken over from a worker that
was cut off is recorded once, by whoever holds it then. A worker hands back what it holds (``release``)
when a storage fault drops its batch, or when it stops before its batch is done.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "queued", "in_progress", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, IN_PROGRESS)
FINISHED = (COMPLETED, FAILED, CANCELLED)
#: Waits between the attempts of one store operation hit by a storage fault (under half a second in all,
#: since HTTP handlers wait on it too); the worker's own, longer backoff is the engine's.
RETRY_DELAYS_S = (0.02, 0.08, 0.3)
#: How long a claimed job stays a worker's without a heartbeat (``--lease-s``).
DEFAULT_LEASE_S = 30.0
#: The worker id of a single-process server (``--role all`` on SQLite).
LOCAL_WORKER = "local"


@dataclass
class Job:
    """One row of the store. ``params`` are the effective request parameters (seed included)."""

    id: str
    seq: int
    status: str
    params: dict[str, Any]
    progress: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    #: The worker that claimed it last (None until claimed, and again once re-queued).
    worker: str | None = None
    #: The owner id of the API key that created it (``server.tenancy``); None without keys.
    owner: str | None = None


def new_job_id() -> str:
    return "video_" + secrets.token_hex(12)


@runtime_checkable
class Store(Protocol):
    """What every job store backend offers. Storage faults are retried inside each operation; one that
    persists raises ``StoreUnavailable`` (and sets ``problem`` for writes), damage ``StoreCorrupt``."""

    data_dir: Path
    video_dir: Path
    #: True when several processes share the store (leases and heartbeats matter).
    shared: bool

    @property
    def problem(self) -> str | None: ...
    @property
    def corrupt(self) -> bool: ...
    def video_path(self, job_id: str) -> Path: ...
    def thumbnail_path(self, job_id: str) -> Path: ...
    def create(self, params: dict[str, Any], owner: str | None = None) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, after: str | None, limit: int, order: str, owner: str | None = None) -> tuple[list[Job], bool]:
        """A page of jobs (of ``owner`` only, if given), see ``SqlJobRows.list``."""
    def queued(self, models: Collection[str] | None = None) -> list[Job]:
        """Queued jobs (of these models, if given), oldest first (the scheduler's FIFO)."""
    def count_active(self) -> int: ...
    def count_queued(self, models: Collection[str] | None = None) -> int: ...
    def claim(self, job_ids: Iterable[str], worker: str, lease_s: float) -> list[Job]:
        """queued -> in_progress for ``worker``, under a lease of ``lease_s``; the jobs it got (oldest
        first). Jobs claimed by another worker meanwhile, cancelled or deleted are left out."""
    def heartbeat(self, worker: str, job_ids: Iterable[str], lease_s: float) -> set[str]:
        """Renew the leases of the jobs ``worker`` holds; the ones it must stop running: cancelled,
        finished or deleted meanwhile, or taken over by another worker after its lease expired."""
    def requeue_expired(self) -> list[str]:
        """Re-queue the running jobs whose lease expired; their ids."""
    def set_progress(self, job_id: str, progress: int) -> None: ...
    def set_progress_many(self, progress: Mapping[str, int]) -> None: ...
    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: tuple[str, str] | None = None, worker: str | None = None) -> bool:
        """Record a queued or running job's outcome; False if it had finished already. With ``worker``
        (a worker recording its own run), only while nobody else holds the job."""
    def requeue(self, job_id: str) -> None: ...
    def release(self, worker: str) -> list[str]:
        """Re-queue the jobs ``worker`` holds now (its batch was dropped, or it is stopping); their ids."""
    def recover(self, worker: str | None = None) -> list[str]:
        """At a worker's start: re-queue what it may have left running (and, shared, expired leases)."""
    def missing_outputs(self) -> list[str]: ...
    def delete(self, job_id: str) -> None: ...
    def remove_outputs(self, job_id: str) -> None: ...
    def finished_before(self, cutoff: float) -> list[str]: ...
    def close(self) -> None: ...


class VideoFiles:
    """The videos and thumbnails in ``DATA_DIR/videos`` (shared by every backend)."""

    data_dir: Path
    video_dir: Path

    def video_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.mp4"

    def thumbnail_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.webp"

    def remove_outputs(self, job_id: str) -> None:
        """Remove a job's video and thumbnail, if any (a cancelled or deleted job leaves no files)."""
        self.video_path(job_id).unlink(missing_ok=True)
        self.thumbnail_path(job_id).unlink(missing_ok=True)

    def missing_outputs(self) -> list[str]:
        """Completed jobs whose video file is gone (deleted by hand, a restored backup, a lost disk)."""
        return [job_id for job_id in self._completed_ids() if not self.video_path(job_id).is_file()]

    def _completed_ids(self) -> list[str]:
        raise NotImplementedError


class SqlJobRows(VideoFiles):
    """The statements both SQL backends write alike, with the backend's parameter marker ``P``
    (``?`` for SQLite, ``%s`` for psycopg); each backend supplies ``_query``, ``_write``, ``_returning``
    and ``_job``."""

    P: str

    def get(self, job_id: str) -> Job | None:
        rows = self._query(f"SELECT * FROM jobs WHERE id = {self.P}", (job_id,))
        return self._job(rows[0]) if rows else None

    def list(self, after: str | None, limit: int, order: str, owner: str | None = None) -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``asc``/``desc``) after the job ``after``; and has_more.
        With ``owner``, only that owner's jobs, and ``after`` must be one of them (KeyError otherwise,
        as for an id that does not exist)."""
        p = self.P
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        conditions, args = ([f"owner = {p}"], [owner]) if owner is not None else ([], [])
        if after is not None:
            anchor = self._query(f"SELECT seq FROM jobs WHERE {' AND '.join([f'id = {p}', *conditions])}",
                                 (after, *args))
            if not anchor:
                raise KeyError(after)
            conditions, args = [*conditions, f"seq {compare} {p}"], [*args, anchor[0]["seq"]]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._query(f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT {p}", (*args, limit + 1))
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def set_progress(self, job_id: str, progress: int) -> None:
        self.set_progress_many({job_id: progress})

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: tuple[str, str] | None = None, worker: str | None = None) -> bool:
        """queued/in_progress -> a finished status; False if it was already finished. With ``worker``,
        False too when another worker holds the job: ``worker``'s lease ran out (it lost the store for
        longer than a lease) and the job was taken over; the new holder records it. A queued job is
        nobody's, so the run that finished it may still record it."""
        p = self.P
        code, message = error or (None, None)
        if worker is None:
            holder, args = f"status IN ({p}, {p})", ACTIVE
        else:
            holder, args = f"(status = {p} OR (status = {p} AND worker = {p}))", (QUEUED, IN_PROGRESS, worker)
        return self._write(
            f"UPDATE jobs SET status = {p}, completed_at = {p}, lease_until = NULL, progress = CASE WHEN {p} = "
            f"'completed' THEN 100 ELSE progress END, result = {p}, error_code = {p}, error_message = {p} "
            f"WHERE id = {p} AND {holder}",
            (status, time.time(), status, json.dumps(result or {}), code, message, job_id, *args)) == 1

    def requeue(self, job_id: str) -> None:
        p = self.P
        self._write("UPDATE jobs SET status = {p}, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
                    "WHERE id = {p} AND status = {p}".format(p=p), (QUEUED, job_id, IN_PROGRESS))

    def release(self, worker: str) -> list[str]:
        """Re-queue the jobs running under ``worker``'s name (never another worker's); their ids."""
        p = self.P
        rows = self._returning(f"UPDATE jobs SET status = {p}, progress = 0, started_at = NULL, worker = NULL, "
                               f"lease_until = NULL WHERE status = {p} AND worker = {p} RETURNING id",
                               (QUEUED, IN_PROGRESS, worker))
        return [r["id"] for r in rows]

    def _completed_ids(self) -> list[str]:
        return [r["id"] for r in self._query(f"SELECT id FROM jobs WHERE status = {self.P} ORDER BY seq", (COMPLETED,))]

    def delete(self, job_id: str) -> None:
        self._write(f"DELETE FROM jobs WHERE id = {self.P}", (job_id,))
        self.remove_outputs(job_id)


def open_store(url: str | None, data_dir: str | Path, allow_empty: bool = False) -> Store:
    """The store ``--store`` names: None (or ``sqlite``) for SQLite in ``data_dir``, a
    ``postgresql://`` URL for PostgreSQL (videos still in ``data_dir``)."""
    if url in (None, "", "sqlite"):
        from server.store.sqlite import JobStore

        return JobStore(data_dir, allow_empty=allow_empty)
    from server.store.postgres import PostgresJobStore, check_url

    check_url(url)
    return PostgresJobStore(url, data_dir)
