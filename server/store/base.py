"""The job store's interface, shared by its backends: the row (``Job``), the statuses and the methods
the HTTP handlers, the engine, the writer and the worker's lease keeper call.

Two backends implement it: :class:`server.store.sqlite.JobStore` (SQLite in ``--data-dir``, the
embedded default: one process) and :class:`server.store.postgres.PostgresJobStore` (``--store
postgresql://...``: several API and worker processes share it). Both keep the videos in
``DATA_DIR/videos`` (``server.store.files``), which workers and front ends of a scaled-out deployment
share; ``server.store.backends.open_store`` picks one. This module imports neither backend, so each
backend and every caller can import it.

A job is *claimed* by one worker (``claim``: queued -> in_progress, atomically across processes) and
held under a *lease* that the worker's heartbeat renews (``heartbeat``). A job whose lease expired (its
worker died or lost the store) goes back to the queue (``requeue_expired``) and runs again with the
same seed, so with the same result. The lease fences the outcome: a worker records a job's outcome
(``finish(..., worker=)``) only while nobody else holds it, so a job taken over from a worker that
was cut off is recorded once, by whoever holds it then. A worker hands back what it holds (``release``)
when a storage fault drops its batch, or when it stops before its batch is done.

A job created with a ``webhook_url`` carries a webhook: ``waiting`` while it runs, ``pending`` from the
statement that finishes it (so an outcome is never recorded without its delivery being owed, however
the process dies), then ``delivered`` or ``failed``. A deliverer claims due webhooks under a lease
(``claim_webhooks``), records each attempt (``record_webhook``, fenced by that claim) and at its start
takes back what it left claimed (``recover_webhooks``).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from server.job_spec import JobSpec

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
#: A job's webhook: the job runs; its outcome is owed to the receiver; it was; it will not be.
WEBHOOK_WAITING, WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "waiting", "pending", "delivered", "failed"


@dataclass(frozen=True)
class WebhookState:
    """Where a job's webhook stands (the video object's ``webhook_status``)."""

    status: str
    #: Attempts made so far; a claim counts as one, so a process that dies mid-attempt still uses one up.
    attempts: int = 0
    #: Why the last attempt did not deliver.
    last_error: str | None = None

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> WebhookState | None:
        """The state in a ``jobs`` row; None for a job without a webhook (every job before webhooks)."""
        if row["webhook_status"] is None:
            return None
        return cls(row["webhook_status"], row["webhook_attempts"], row["webhook_error"])


@dataclass
class Job:
    """One row of the store: the job's typed request (``spec``, every default and the seed filled in)
    and what became of it."""

    id: str
    seq: int
    status: str
    spec: JobSpec
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
    #: Its webhook, if it was created with a ``webhook_url``.
    webhook: WebhookState | None = None


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
    def create(self, spec: JobSpec, owner: str | None = None, inputs: Mapping[str, bytes] | None = None) -> Job:
        """A queued job; ``inputs`` (key -> bytes: its ``input_reference`` image) are stored with it, in the
        same transaction, for whichever worker runs it, and deleted with it."""
    def read_input(self, job_id: str, key: str) -> bytes | None:
        """An input file stored with the job, or None (the job, or the file, is gone)."""
    def get(self, job_id: str) -> Job | None: ...
    def list(self, after: str | None, limit: int, order: str, owner: str | None = None) -> tuple[list[Job], bool]:
        """A page of jobs (of ``owner`` only, if given), see ``server.store.sql_rows.SqlJobRows.list``."""
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
    def delete(self, job_id: str) -> None:
        """The job, its input files and its output files."""
    def remove_outputs(self, job_id: str) -> None: ...
    def finished_before(self, cutoff: float) -> list[str]: ...
    def claim_webhooks(self, worker: str, limit: int, lease_s: float) -> list[Job]:
        """Up to ``limit`` jobs whose webhook is due, claimed by ``worker`` for ``lease_s`` (their attempt
        counted); across processes no two claim the same one until its lease runs out."""
    def record_webhook(self, job_id: str, worker: str, attempt: int, status: str, error: str | None = None,
                       retry_in_s: float | None = None) -> bool:
        """The outcome of ``worker``'s attempt number ``attempt``: ``status`` delivered, failed, or pending
        again in ``retry_in_s``. False (nothing written) if the claim was lost or the job deleted."""
    def recover_webhooks(self, worker: str) -> int:
        """At a deliverer's start: make what it left claimed (a kill mid-attempt) due now; how many."""
    def close(self) -> None: ...
