"""Opening the backend that ``--store`` names: the one module that knows both backends, so that neither
they nor the interface (``server.store.base``) import each other."""

from __future__ import annotations

from pathlib import Path

from server.store.base import Store
from server.store.postgres import PostgresJobStore, check_url
from server.store.sqlite import JobStore


def open_store(url: str | None, data_dir: str | Path, allow_empty: bool = False) -> Store:
    """The store ``--store`` names: None (or ``sqlite``) for SQLite in ``data_dir``, a
    ``postgresql://`` URL for PostgreSQL (videos still in ``data_dir``)."""
    if url in (None, "", "sqlite"):
        return JobStore(data_dir, allow_empty=allow_empty)
    check_url(url)
    return PostgresJobStore(url, data_dir)
