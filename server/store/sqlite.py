"""Durable job records in SQLite (WAL) under the data directory, and the output files' paths.

Every state change is committed before it is acted on, so after a crash or ``kill -9`` the store says
exactly which jobs finished (their files were renamed into place before the row said so) and which
were queued or running (they are re-queued at start and re-run with the same seed, hence the same
result). One connection guarded by a lock: the writers are the HTTP handlers and the single worker,
and each statement is tiny next to a denoising step. This is the embedded backend of one process; the
interface it implements is ``server.store.base``, the backend for several ``server.store.postgres``.

Storage faults (disk full, I/O errors, a locked file) are retried a few times with a short backoff
inside every operation; one that persists raises ``StoreUnavailable`` and leaves ``problem`` set
until a later write succeeds. A damaged file raises ``StoreCorrupt`` and stays a ``problem`` for good.
The file is integrity-checked before it is opened (``server.store.integrity``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from server.job_spec import JobSpec
from server.store.base import (
    ACTIVE, DEFAULT_LEASE_S, FINISHED, IN_PROGRESS, LOCAL_WORKER, QUEUED, RETRY_DELAYS_S, WEBHOOK_PENDING,
    WEBHOOK_WAITING, Job, WebhookState, new_job_id,
)
from server.store.errors import StoreHealth, StoreUnavailable, is_corruption
from server.store.integrity import DB_NAME, check_data_dir
from server.store.sql_rows import SqlJobRows
from server.store.webhook_rows import SqlWebhookRows

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
#: Versioned migrations (``schema_version``), applied in order at open; 1 is the original schema.
_MIGRATIONS: dict[int, str] = {
    1: _SCHEMA,
    # The claiming worker, its lease (time.time() seconds) and the job's model (the worker's filter).
    2: "ALTER TABLE jobs ADD COLUMN worker TEXT; ALTER TABLE jobs ADD COLUMN lease_until REAL; "
       "ALTER TABLE jobs ADD COLUMN model TEXT; CREATE INDEX IF NOT EXISTS jobs_model ON jobs(status, model, seq);",
    # The owner id of the key that created the job (server.tenancy); earlier rows have none.
    3: "ALTER TABLE jobs ADD COLUMN owner TEXT; CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);",
    # The job's webhook (server.store.webhook_rows); earlier rows have none.
    4: "ALTER TABLE jobs ADD COLUMN webhook_status TEXT; "
       "ALTER TABLE jobs ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0; "
       "ALTER TABLE jobs ADD COLUMN webhook_due_at REAL; ALTER TABLE jobs ADD COLUMN webhook_worker TEXT; "
       "ALTER TABLE jobs ADD COLUMN webhook_error TEXT; "
       "CREATE INDEX IF NOT EXISTS jobs_webhook_due ON jobs(webhook_due_at) WHERE webhook_status = 'pending'",
    # A job's input files (its input_reference image), stored with it and deleted with it.
    5: "CREATE TABLE IF NOT EXISTS job_inputs (job_id TEXT NOT NULL, key TEXT NOT NULL, data BLOB NOT NULL, "
       "PRIMARY KEY (job_id, key))",
}
SCHEMA_VERSION = max(_MIGRATIONS)


class JobStore(StoreHealth, SqlJobRows, SqlWebhookRows):
    """The SQLite backend (one process: ``--role all``)."""

    shared = False
    P = "?"
    #: time.time() on the database's side, to the millisecond.
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, data_dir: str | Path, allow_empty: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.video_dir = self.data_dir / "videos"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_data_dir(self.data_dir, allow_empty)
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self.retry_delays_s = RETRY_DELAYS_S
        self._lock = threading.Lock()
        StoreHealth.__init__(self)
        self._db = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.applied_migrations = self._migrate()

    def _migrate(self) -> list[int]:
        """Apply the migrations this file lacks; the versions applied (none when up to date)."""
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        applied = []
        for version in sorted(v for v in _MIGRATIONS if v > current):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                    db.execute(statement)
                if version == 2:  # backfill the model column of earlier jobs
                    rows = db.execute("SELECT id, params FROM jobs").fetchall()
                    db.executemany("UPDATE jobs SET model = ? WHERE id = ?",
                                   [(json.loads(r["params"]).get("model"), r["id"]) for r in rows])
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            applied.append(version)
        return applied

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"], seq=row["seq"], status=row["status"], spec=JobSpec.from_json(json.loads(row["params"])),
            progress=row["progress"], created_at=row["created_at"], started_at=row["started_at"],
            completed_at=row["completed_at"], error_code=row["error_code"], error_message=row["error_message"],
            result=json.loads(row["result"]) if row["result"] else {}, attempts=row["attempts"],
            worker=row["worker"], owner=row["owner"], webhook=WebhookState.of_row(row),
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
            self._note_outcome(write, f"store writes are failing: {exc}")
            raise StoreUnavailable(f"job store: {exc}") from exc

    def _once(self, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            with self._lock:
                result = operation(self._db)
        except sqlite3.DatabaseError as exc:
            self._raise_if_corrupt(exc, is_corruption(exc), str(self.data_dir / DB_NAME),
                                   "move it aside or restore a backup")
            raise
        self._note_outcome(write)
        return result

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._attempt(lambda db: db.execute(sql, args).fetchall(), write=False)

    def _write(self, sql: str, args: tuple = ()) -> int:
        """Execute one data-changing statement; the number of rows it changed."""
        return self._attempt(lambda db: db.execute(sql, args).rowcount, write=True)

    def _returning(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """Execute one data-changing ``... RETURNING`` statement; the rows it returned."""
        return self._attempt(lambda db: db.execute(sql, args).fetchall(), write=True)

    def _transaction(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Execute data-changing statements in one transaction; the rows each changed."""
        def run(db: sqlite3.Connection) -> list[int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                counts = [db.execute(sql, args).rowcount for sql, args in statements]
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return counts

        return self._attempt(run, write=True)

    def create(self, spec: JobSpec, owner: str | None = None, inputs: Mapping[str, bytes] | None = None) -> Job:
        job_id = new_job_id()
        self._transaction([(
            "INSERT INTO jobs (id, status, params, created_at, model, owner, webhook_status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, QUEUED, json.dumps(spec.to_json()), time.time(), spec.model, owner,
             WEBHOOK_WAITING if spec.webhook_url else None),
        ), *self._input_rows(job_id, inputs)])
        return self.get(job_id)

    @staticmethod
    def _models(models: Collection[str] | None) -> tuple[str, tuple]:
        if models is None:
            return "", ()
        models = tuple(models)
        return f" AND model IN ({', '.join('?' * len(models))})", models

    def queued(self, models: Collection[str] | None = None) -> list[Job]:
        """Queued jobs (of these models, if given), oldest first (the scheduler's FIFO)."""
        where, args = self._models(models)
        return [self._job(r) for r in self._query(f"SELECT * FROM jobs WHERE status = ?{where} ORDER BY seq",
                                                  (QUEUED, *args))]

    def count_active(self) -> int:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", ACTIVE)[0][0]

    def count_queued(self, models: Collection[str] | None = None) -> int:
        where, args = self._models(models)
        return self._query(f"SELECT COUNT(*) FROM jobs WHERE status = ?{where}", (QUEUED, *args))[0][0]

    def claim(self, job_ids: Iterable[str], worker: str = LOCAL_WORKER, lease_s: float = DEFAULT_LEASE_S) -> list[Job]:
        """queued -> in_progress for ``worker``; the jobs it got, oldest first. One UPDATE per job: each is
        atomic within the database file (a job that left the queue meanwhile is not claimed)."""
        claimed = []
        for job_id in job_ids:
            rows = self._attempt(lambda db, job_id=job_id: db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, progress = 0, attempts = attempts + 1, worker = ?, "
                "lease_until = ? WHERE id = ? AND status = ? RETURNING *",
                (IN_PROGRESS, time.time(), worker, time.time() + lease_s, job_id, QUEUED)).fetchall(), write=True)
            claimed += [self._job(r) for r in rows]
        return sorted(claimed, key=lambda job: job.seq)

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease_s: float) -> set[str]:
        held = list(dict.fromkeys(job_ids))
        if not held:
            return set()
        marks = ", ".join("?" * len(held))
        renewed = {r["id"] for r in self._attempt(lambda db: db.execute(
            f"UPDATE jobs SET lease_until = ? WHERE worker = ? AND status = ? AND id IN ({marks}) RETURNING id",
            (time.time() + lease_s, worker, IN_PROGRESS, *held)).fetchall(), write=True)}
        rest = [job_id for job_id in held if job_id not in renewed]
        if not rest:
            return set()
        rows = {r["id"]: r for r in self._query(
            f"SELECT id, status, worker FROM jobs WHERE id IN ({', '.join('?' * len(rest))})", tuple(rest))}
        # Re-queued ones (a failed batch's jobs, retried alone) are not lost: the worker claims them again.
        return {job_id for job_id in rest if job_id not in rows or rows[job_id]["status"] != QUEUED}

    def requeue_expired(self) -> list[str]:
        rows = self._attempt(lambda db: db.execute(
            "UPDATE jobs SET status = ?, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
            "WHERE status = ? AND lease_until < ? RETURNING id", (QUEUED, IN_PROGRESS, time.time())).fetchall(),
            write=True)
        return [r["id"] for r in rows]

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

    def recover(self, worker: str | None = None) -> list[str]:
        """At start: every job a previous process left running goes back to the queue. One process
        serves a SQLite store, so whichever worker (and lease) a running row names is gone."""
        rows = self._query("SELECT id FROM jobs WHERE status = ?", (IN_PROGRESS,))
        self._write("UPDATE jobs SET status = ?, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
                    "WHERE status = ?", (QUEUED, IN_PROGRESS))
        return [r["id"] for r in rows]

    def recover_webhooks(self, worker: str) -> int:
        """At start: every claimed webhook is due now. One process serves a SQLite store, so whichever
        deliverer a claim names is gone."""
        return self._write(f"UPDATE jobs SET webhook_worker = NULL, webhook_due_at = {self.NOW} "
                           "WHERE webhook_status = ? AND webhook_worker IS NOT NULL", (WEBHOOK_PENDING,))

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of finished jobs whose ``completed_at`` is before ``cutoff`` (retention's sweep)."""
        rows = self._query("SELECT id FROM jobs WHERE status IN (?, ?, ?) AND completed_at < ? ORDER BY seq",
                           (*FINISHED, cutoff))
        return [r["id"] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
