"""The PostgreSQL job store (``--store postgresql://...``): several API and worker processes share it.

Same rows and contract as the SQLite store (``server.store.base``); what differs is concurrency:

* **Claiming** is one statement, ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``: two
  workers claiming the same queued jobs at once each get a disjoint part, never the same job.
* **Leases** are on the database's clock (``clock_timestamp()``), so workers' clocks may disagree. A
  worker's heartbeat renews its jobs' leases; any worker re-queues jobs whose lease expired.
* **Recovery** at a worker's start re-queues only its own rows (``--worker-id``) and expired ones,
  never another live worker's jobs.
* **Migrations** are versioned in ``schema_version`` and applied at open under an advisory lock, so
  processes starting together apply each one once.
* **Events** go out with ``NOTIFY`` on :data:`EVENT_CHANNEL` (``server.pg_events``).
* **Webhooks** are claimed like jobs, ``FOR UPDATE SKIP LOCKED`` under a lease on the database clock,
  so each due webhook is attempted by one deliverer of the deployment at a time.

Faults: a lost connection, a server restarting or refusing connections (``OperationalError``) is a
storage fault: the operation reconnects and retries (``RETRY_DELAYS_S``), then raises
``StoreUnavailable``, which the engine waits out with its backoff. ``data_corrupted`` /
``index_corrupted`` errors raise ``StoreCorrupt``. One connection per process, guarded by a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from server.job_spec import JobSpec
from server.store.base import (
    ACTIVE, DEFAULT_LEASE_S, FINISHED, IN_PROGRESS, QUEUED, RETRY_DELAYS_S, WEBHOOK_WAITING, Job, WebhookState, new_job_id,
)
from server.store.errors import StoreHealth, StoreUnavailable
from server.store.sql_rows import SqlJobRows
from server.store.webhook_rows import SqlWebhookRows

log = logging.getLogger("nrg.store")
T = TypeVar("T")

#: The NOTIFY channel of job events. Channels are per database, and a database is one deployment.
EVENT_CHANNEL = "nrg_events"
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"
#: Key of the advisory lock that serialises migrations between processes starting together.
_MIGRATION_LOCK = 7_314_001

_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    params TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_queued_model ON jobs (model, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running_lease ON jobs (lease_until) WHERE status = 'in_progress';
""",
    # The owner id of the key that created the job (server.tenancy); earlier rows have none.
    2: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS owner TEXT; CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);",
    # The job's webhook (server.store.webhook_rows); earlier rows have none.
    3: """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS webhook_status TEXT,
    ADD COLUMN IF NOT EXISTS webhook_attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS webhook_due_at DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS webhook_worker TEXT,
    ADD COLUMN IF NOT EXISTS webhook_error TEXT;
CREATE INDEX IF NOT EXISTS jobs_webhook_due ON jobs (webhook_due_at) WHERE webhook_status = 'pending';
""",
    # A job's input files (its input_reference image), stored with it and deleted with it.
    4: "CREATE TABLE IF NOT EXISTS job_inputs (job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, "
       "key TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (job_id, key));",
}
SCHEMA_VERSION = max(_MIGRATIONS)


def redacted(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> None:
    """Raise ``ValueError`` naming ``--store`` unless ``url`` is a PostgreSQL connection URL."""
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"--store must be a postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE URL, or omitted for "
                         f"SQLite in --data-dir; got {redacted(url)!r}")
    try:
        import psycopg
    except ImportError:
        raise ValueError("--store postgresql://... needs psycopg: pip install 'nrg-serve[postgres]'") from None
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError on a port that is not a number
        psycopg.conninfo.conninfo_to_dict(url)
    except (ValueError, psycopg.ProgrammingError) as exc:
        raise ValueError(f"--store: not a valid PostgreSQL URL ({redacted(url)!r}): {exc}") from None


def _is_corruption(exc: BaseException) -> bool:
    import psycopg.errors as errors

    return isinstance(exc, errors.DataCorrupted | errors.IndexCorrupted)


class PostgresJobStore(StoreHealth, SqlJobRows, SqlWebhookRows):
    shared = True
    P = "%s"
    NOW = _NOW
    LOCK_CLAIMED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, data_dir: str | Path, connect_timeout_s: float = 5.0) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.data_dir = Path(data_dir)
        self.video_dir = self.data_dir / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self.retry_delays_s = RETRY_DELAYS_S
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn = None
        StoreHealth.__init__(self)
        try:
            self.applied_migrations = self._attempt(self._migrate, write=True)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"{exc} (is PostgreSQL running at --store {redacted(url)}?)") from None

    # -- connection and faults ---------------------------------------------------------------------
    def connect(self, **options: Any):
        """A new connection to the store's database (autocommit), e.g. for LISTEN."""
        from psycopg.rows import dict_row

        return self._psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                     connect_timeout=max(1, round(self.connect_timeout_s)), **options)

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            self._conn = self.connect()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass
            self._conn = None

    def _attempt(self, operation: Callable[[Any], T], write: bool, retries: bool = True) -> T:
        """Run ``operation(connection)``, reconnecting and retrying while the server is unreachable."""
        psycopg = self._psycopg
        delays = self.retry_delays_s if retries else ()
        for attempt in range(len(delays) + 1):
            try:
                with self._lock:
                    result = operation(self._connection())
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                with self._lock:
                    self._drop()
                if attempt < len(delays):
                    time.sleep(delays[attempt])
                    continue
                message = f"job store {redacted(self.url)}: {' '.join(str(exc).split()) or type(exc).__name__}"
                self._note_outcome(write, f"store writes are failing: {message}")
                raise StoreUnavailable(message) from exc
            except psycopg.DatabaseError as exc:
                self._raise_if_corrupt(exc, _is_corruption(exc), redacted(self.url), "restore the database from a backup")
                raise
            self._note_outcome(write)
            return result
        raise AssertionError("unreachable")

    def _query(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        return self._attempt(lambda c: c.execute(sql, args).fetchall(), write=False)

    def _returning(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        return self._attempt(lambda c: c.execute(sql, args).fetchall(), write=True)

    def _write(self, sql: str, args: Any = ()) -> int:
        return self._attempt(lambda c: c.execute(sql, args).rowcount, write=True)

    def _migrate(self, conn) -> list[int]:
        applied = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
            current = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version").fetchone()["v"]
            for version in sorted(v for v in _MIGRATIONS if v > current):
                conn.execute(_MIGRATIONS[version])
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                             (version, time.time()))
                applied.append(version)
        if applied:
            log.info("job store %s: applied schema migrations %s", redacted(self.url), applied)
        return applied

    @staticmethod
    def _job(row: Mapping[str, Any]) -> Job:
        return Job(
            id=row["id"], seq=row["seq"], status=row["status"], spec=JobSpec.from_json(json.loads(row["params"])),
            progress=row["progress"], created_at=row["created_at"], started_at=row["started_at"],
            completed_at=row["completed_at"], error_code=row["error_code"], error_message=row["error_message"],
            result=json.loads(row["result"]) if row["result"] else {}, attempts=row["attempts"], worker=row["worker"],
            owner=row["owner"], webhook=WebhookState.of_row(row),
        )

    # -- the contract ------------------------------------------------------------------------------
    def _transaction(self, statements: list[tuple[str, Any]]) -> list[int]:
        """Execute data-changing statements in one transaction; the rows each changed."""
        def run(conn) -> list[int]:
            with conn.transaction():
                return [conn.execute(sql, args).rowcount for sql, args in statements]

        return self._attempt(run, write=True)

    def create(self, spec: JobSpec, owner: str | None = None, inputs: Mapping[str, bytes] | None = None) -> Job:
        job_id = new_job_id()
        # ON CONFLICT: a retry after a lost reply must not fail on the rows its first attempt wrote.
        self._transaction([("INSERT INTO jobs (id, status, model, params, created_at, owner, webhook_status) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                            (job_id, QUEUED, spec.model, json.dumps(spec.to_json()), time.time(), owner,
                             WEBHOOK_WAITING if spec.webhook_url else None)),
                           *self._input_rows(job_id, inputs, " ON CONFLICT (job_id, key) DO NOTHING")])
        return self.get(job_id)

    def queued(self, models: Collection[str] | None = None) -> list[Job]:
        if models is None:
            rows = self._query("SELECT * FROM jobs WHERE status = %s ORDER BY seq", (QUEUED,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE status = %s AND model = ANY(%s) ORDER BY seq",
                               (QUEUED, list(models)))
        return [self._job(r) for r in rows]

    def count_active(self) -> int:
        return self._query("SELECT COUNT(*) AS n FROM jobs WHERE status = ANY(%s)", (list(ACTIVE),))[0]["n"]

    def count_queued(self, models: Collection[str] | None = None) -> int:
        if models is None:
            return self._query("SELECT COUNT(*) AS n FROM jobs WHERE status = %s", (QUEUED,))[0]["n"]
        return self._query("SELECT COUNT(*) AS n FROM jobs WHERE status = %s AND model = ANY(%s)",
                           (QUEUED, list(models)))[0]["n"]

    def claim(self, job_ids: Iterable[str], worker: str, lease_s: float = DEFAULT_LEASE_S) -> list[Job]:
        ids = list(job_ids)
        if not ids:
            return []
        rows = self._returning(
            f"UPDATE jobs SET status = %s, started_at = %s, progress = 0, attempts = attempts + 1, worker = %s, "
            f"lease_until = {_NOW} + %s WHERE id IN (SELECT id FROM jobs WHERE id = ANY(%s) AND status = %s "
            f"ORDER BY seq FOR UPDATE SKIP LOCKED) AND status = %s RETURNING *",
            (IN_PROGRESS, time.time(), worker, lease_s, ids, QUEUED, QUEUED))
        return sorted((self._job(r) for r in rows), key=lambda job: job.seq)

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease_s: float) -> set[str]:
        held = list(dict.fromkeys(job_ids))
        if not held:
            return set()

        def beat(conn) -> set[str]:
            renewed = {r["id"] for r in conn.execute(
                f"UPDATE jobs SET lease_until = {_NOW} + %s WHERE id = ANY(%s) AND worker = %s AND status = %s "
                "RETURNING id", (lease_s, held, worker, IN_PROGRESS)).fetchall()}
            rest = [job_id for job_id in held if job_id not in renewed]
            if not rest:
                return set()
            rows = {r["id"]: r["status"] for r in conn.execute(
                "SELECT id, status FROM jobs WHERE id = ANY(%s)", (rest,)).fetchall()}
            return {job_id for job_id in rest if rows.get(job_id) != QUEUED}

        return self._attempt(beat, write=True)

    def requeue_expired(self) -> list[str]:
        rows = self._returning(
            "UPDATE jobs SET status = %s, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
            f"WHERE status = %s AND lease_until < {_NOW} RETURNING id", (QUEUED, IN_PROGRESS))
        return [r["id"] for r in rows]

    def set_progress_many(self, progress: Mapping[str, int]) -> None:
        rows = [(value, job_id, IN_PROGRESS) for job_id, value in progress.items()]

        def write(conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("UPDATE jobs SET progress = %s WHERE id = %s AND status = %s", rows)

        if rows:
            self._attempt(write, write=True)

    def recover(self, worker: str | None = None) -> list[str]:
        """At a worker's start: re-queue its running rows (a restart with the same ``--worker-id``) and
        rows whose lease expired; never another live worker's."""
        rows = self._returning(
            "UPDATE jobs SET status = %s, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
            f"WHERE status = %s AND (worker = %s OR lease_until IS NULL OR lease_until < {_NOW}) RETURNING id",
            (QUEUED, IN_PROGRESS, worker))
        return [r["id"] for r in rows]

    def finished_before(self, cutoff: float) -> list[str]:
        rows = self._query("SELECT id FROM jobs WHERE status = ANY(%s) AND completed_at < %s ORDER BY seq",
                           (list(FINISHED), cutoff))
        return [r["id"] for r in rows]

    def notify(self, channel: str, payload: str) -> None:
        """``NOTIFY channel, payload`` once, without retries (events are advisory; the row is the truth)."""
        self._attempt(lambda c: c.execute("SELECT pg_notify(%s, %s)", (channel, payload)), write=False, retries=False)

    def close(self) -> None:
        with self._lock:
            self._drop()
