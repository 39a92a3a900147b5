"""Durable job records in SQLite (WAL) under the data directory, and the output files' paths.

Every state change is committed before it is acted on, so after a crash or ``kill -9`` the store says
exactly which jobs finished (their files were renamed into place before the row said so) and which
were queued or running (they are re-queued at start and re-run with the same seed, hence the same
result). One connection guarded by a lock: the writers are the HTTP handlers and the single worker,
and each statement is tiny next to a denoising step.

Storage faults (disk full, I/O errors, a locked file) are retried a few times with a short backoff
inside every operation; one that persists raises ``StoreUnavailable`` and leaves ``problem`` set
until a later write succeeds. A damaged file raises ``StoreCorrupt`` and stays a ``problem`` for good.
The file is integrity-checked before it is opened (``server.store_integrity``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from server.store_errors import StoreCorrupt, StoreUnavailable, is_corruption
from server.store_integrity import DB_NAME, check_data_dir

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "queued", "in_progress", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, IN_PROGRESS)
FINISHED = (COMPLETED, FAILED, CANCELLED)
#: Waits between the attempts of one store operation hit by a storage fault (under half a second in all,
#: since HTTP handlers wait on it too); the worker's own, longer backoff is the engine's.
RETRY_DELAYS_S = (0.02, 0.08, 0.3)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
"""


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


def new_job_id() -> str:
    return "video_" + secrets.token_hex(12)


class JobStore:
    def __init__(self, data_dir: str | Path, allow_empty: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.video_dir = self.data_dir / "videos"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_data_dir(self.data_dir, allow_empty)
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self.retry_delays_s = RETRY_DELAYS_S
        self._lock = threading.Lock()
        self._write_failure: str | None = None
        self._corruption: str | None = None
        self._db = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    @property
    def problem(self) -> str | None:
        """Why the store cannot serve right now (corruption, or writes failing), or None."""
        return self._corruption or self._write_failure

    @property
    def corrupt(self) -> bool:
        return self._corruption is not None

    def video_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.mp4"

    def thumbnail_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.webp"

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"], seq=row["seq"], status=row["status"], params=json.loads(row["params"]),
            progress=row["progress"], created_at=row["created_at"], started_at=row["started_at"],
            completed_at=row["completed_at"], error_code=row["error_code"], error_message=row["error_message"],
            result=json.loads(row["result"]) if row["result"] else {}, attempts=row["attempts"],
        )

    def _attempt(self, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """Run ``operation``, retrying storage faults; record a fault that outlasts the retries."""
        for delay in self.retry_delays_s:
            try:
                return self._once(operation, write)
            except sqlite3.OperationalError:
                time.sleep(delay)
        try:
            return self._once(operation, write)
        except sqlite3.OperationalError as exc:
            if write:
                self._write_failure = f"store writes are failing: {exc}"
            raise StoreUnavailable(f"job store: {exc}") from exc

    def _once(self, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            with self._lock:
                result = operation(self._db)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._corruption = f"{self.data_dir / DB_NAME}: {exc}"
            raise StoreCorrupt(f"{self._corruption} (move it aside or restore a backup)") from exc
        if write:
            self._write_failure = None
        return result

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._attempt(lambda db: db.execute(sql, args).fetchall(), write=False)

    def _write(self, sql: str, args: tuple = ()) -> int:
        """Execute one data-changing statement; the number of rows it changed."""
        return self._attempt(lambda db: db.execute(sql, args).rowcount, write=True)

    def create(self, params: dict[str, Any]) -> Job:
        job_id = new_job_id()
        self._write(
            "INSERT INTO jobs (id, status, params, created_at) VALUES (?, ?, ?, ?)",
            (job_id, QUEUED, json.dumps(params), time.time()),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def list(self, after: str | None, limit: int, order: str) -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``asc``/``desc``) after the job ``after``; and has_more."""
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        where, args = "", ()
        if after is not None:
            anchor = self._query("SELECT seq FROM jobs WHERE id = ?", (after,))
            if not anchor:
                raise KeyError(after)
            where, args = f"WHERE seq {compare} ?", (anchor[0]["seq"],)
        rows = self._query(f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT ?", (*args, limit + 1))
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def queued(self) -> list[Job]:
        """Queued jobs, oldest first (the scheduler's FIFO)."""
        return [self._job(r) for r in self._query("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (QUEUED,))]

    def count_active(self) -> int:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", ACTIVE)[0][0]

    def count_queued(self) -> int:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,))[0][0]

    def mark_started(self, job_id: str) -> bool:
        """queued -> in_progress; False if the job left the queue meanwhile (cancelled, deleted)."""
        return self._write(
            "UPDATE jobs SET status = ?, started_at = ?, progress = 0, attempts = attempts + 1 "
            "WHERE id = ? AND status = ?",
            (IN_PROGRESS, time.time(), job_id, QUEUED),
        ) == 1

    def set_progress(self, job_id: str, progress: int) -> None:
        self.set_progress_many({job_id: progress})

    def set_progress_many(self, progress: Mapping[str, int]) -> None:
        """Record the progress of several running jobs in one transaction (one per batch step at most)."""
        rows = [(value, job_id, IN_PROGRESS) for job_id, value in progress.items()]

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.executemany("UPDATE jobs SET progress = ? WHERE id = ? AND status = ?", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        if rows:
            self._attempt(write, write=True)

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: tuple[str, str] | None = None) -> bool:
        """in_progress/queued -> a finished status; False if it was already finished."""
        code, message = error or (None, None)
        return self._write(
            "UPDATE jobs SET status = ?, completed_at = ?, progress = CASE WHEN ? = 'completed' THEN 100 "
            "ELSE progress END, result = ?, error_code = ?, error_message = ? WHERE id = ? AND status IN (?, ?)",
            (status, time.time(), status, json.dumps(result or {}), code, message, job_id, *ACTIVE),
        ) == 1

    def requeue(self, job_id: str) -> None:
        self._write("UPDATE jobs SET status = ?, progress = 0, started_at = NULL WHERE id = ? AND status = ?",
                      (QUEUED, job_id, IN_PROGRESS))

    def recover(self) -> list[str]:
        """At start: every job a previous process left running goes back to the queue."""
        rows = self._query("SELECT id FROM jobs WHERE status = ?", (IN_PROGRESS,))
        self._write("UPDATE jobs SET status = ?, progress = 0, started_at = NULL WHERE status = ?",
                      (QUEUED, IN_PROGRESS))
        return [r["id"] for r in rows]

    def missing_outputs(self) -> list[str]:
        """Completed jobs whose video file is gone (deleted by hand, a restored backup, a lost disk)."""
        rows = self._query("SELECT id FROM jobs WHERE status = ? ORDER BY seq", (COMPLETED,))
        return [r["id"] for r in rows if not self.video_path(r["id"]).is_file()]

    def delete(self, job_id: str) -> None:
        self._write("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.remove_outputs(job_id)

    def remove_outputs(self, job_id: str) -> None:
        """Remove a job's video and thumbnail, if any (a cancelled or deleted job leaves no files)."""
        self.video_path(job_id).unlink(missing_ok=True)
        self.thumbnail_path(job_id).unlink(missing_ok=True)

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of finished jobs whose ``completed_at`` is before ``cutoff`` (retention's sweep)."""
        rows = self._query("SELECT id FROM jobs WHERE status IN (?, ?, ?) AND completed_at < ? ORDER BY seq",
                           (*FINISHED, cutoff))
        return [r["id"] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
