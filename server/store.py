"""Durable job records in SQLite (WAL) under the data directory, and the output files' paths.

Every state change is committed before it is acted on, so after a crash or ``kill -9`` the store says
exactly which jobs finished (their files were renamed into place before the row said so) and which
were queued or running (they are re-queued at start and re-run with the same seed, hence the same
result). One connection guarded by a lock: the writers are the HTTP handlers and the single worker,
and each statement is tiny next to a denoising step.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "queued", "in_progress", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, IN_PROGRESS)
FINISHED = (COMPLETED, FAILED, CANCELLED)

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
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.video_dir = self.data_dir / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

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

    def _execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create(self, params: dict[str, Any]) -> Job:
        job_id = new_job_id()
        self._execute(
            "INSERT INTO jobs (id, status, params, created_at) VALUES (?, ?, ?, ?)",
            (job_id, QUEUED, json.dumps(params), time.time()),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        row = self._execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list(self, after: str | None, limit: int, order: str) -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``asc``/``desc``) after the job ``after``; and has_more."""
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        where, args = "", ()
        if after is not None:
            anchor = self._execute("SELECT seq FROM jobs WHERE id = ?", (after,)).fetchone()
            if anchor is None:
                raise KeyError(after)
            where, args = f"WHERE seq {compare} ?", (anchor["seq"],)
        rows = self._execute(f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT ?", (*args, limit + 1)).fetchall()
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def queued(self) -> list[Job]:
        """Queued jobs, oldest first (the scheduler's FIFO)."""
        return [self._job(r) for r in self._execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (QUEUED,))]

    def count_active(self) -> int:
        return self._execute("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", ACTIVE).fetchone()[0]

    def count_queued(self) -> int:
        return self._execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()[0]

    def mark_started(self, job_id: str) -> bool:
        """queued -> in_progress; False if the job left the queue meanwhile (cancelled, deleted)."""
        cursor = self._execute(
            "UPDATE jobs SET status = ?, started_at = ?, progress = 0, attempts = attempts + 1 "
            "WHERE id = ? AND status = ?",
            (IN_PROGRESS, time.time(), job_id, QUEUED),
        )
        return cursor.rowcount == 1

    def set_progress(self, job_id: str, progress: int) -> None:
        self._execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = ?", (progress, job_id, IN_PROGRESS))

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: tuple[str, str] | None = None) -> bool:
        """in_progress/queued -> a finished status; False if it was already finished."""
        code, message = error or (None, None)
        cursor = self._execute(
            "UPDATE jobs SET status = ?, completed_at = ?, progress = CASE WHEN ? = 'completed' THEN 100 "
            "ELSE progress END, result = ?, error_code = ?, error_message = ? WHERE id = ? AND status IN (?, ?)",
            (status, time.time(), status, json.dumps(result or {}), code, message, job_id, *ACTIVE),
        )
        return cursor.rowcount == 1

    def requeue(self, job_id: str) -> None:
        self._execute("UPDATE jobs SET status = ?, progress = 0, started_at = NULL WHERE id = ? AND status = ?",
                      (QUEUED, job_id, IN_PROGRESS))

    def recover(self) -> list[str]:
        """At start: every job a previous process left running goes back to the queue."""
        rows = self._execute("SELECT id FROM jobs WHERE status = ?", (IN_PROGRESS,)).fetchall()
        self._execute("UPDATE jobs SET status = ?, progress = 0, started_at = NULL WHERE status = ?",
                      (QUEUED, IN_PROGRESS))
        return [r["id"] for r in rows]

    def delete(self, job_id: str) -> None:
        self._execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.video_path(job_id).unlink(missing_ok=True)
        self.thumbnail_path(job_id).unlink(missing_ok=True)

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of finished jobs whose ``completed_at`` is before ``cutoff`` (retention's sweep)."""
        rows = self._execute("SELECT id FROM jobs WHERE status IN (?, ?, ?) AND completed_at < ? ORDER BY seq",
                             (*FINISHED, cutoff)).fetchall()
        return [r["id"] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
