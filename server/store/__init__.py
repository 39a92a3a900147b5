"""The durable job store: one interface (``Store``), two backends (``sqlite``, ``postgres``), chosen by
``--store`` (``open_store``). Callers outside this package import from here; a backend's own names
(``JobStore``, ``PostgresJobStore``) from its module."""

from server.store.backends import open_store
from server.store.base import (
    ACTIVE, CANCELLED, COMPLETED, DEFAULT_LEASE_S, FAILED, FINISHED, IN_PROGRESS, LOCAL_WORKER, QUEUED,
    WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING, WEBHOOK_WAITING, Job, Store, WebhookState,
)
from server.store.errors import StoreCorrupt, StoreError, StoreUnavailable, is_corruption, is_storage_fault

__all__ = [
    "ACTIVE", "CANCELLED", "COMPLETED", "DEFAULT_LEASE_S", "FAILED", "FINISHED", "IN_PROGRESS", "LOCAL_WORKER",
    "QUEUED", "WEBHOOK_DELIVERED", "WEBHOOK_FAILED", "WEBHOOK_PENDING", "WEBHOOK_WAITING", "Job", "Store",
    "StoreCorrupt", "StoreError", "StoreUnavailable", "WebhookState", "is_corruption", "is_storage_fault", "open_store",
]
