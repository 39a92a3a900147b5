"""What can go wrong with the job store and its files, sorted by what the server should do about it.

A *storage fault* (disk full, file-size limit, I/O error, a locked database) is usually transient:
the work it interrupted is put back and retried later, never failed. Corruption is not transient:
the server stops serving and exits so that a person restores the file.
"""

from __future__ import annotations

import errno
import sqlite3


class StoreError(RuntimeError):
    """The job store cannot do what was asked; the message says why and what to do."""


class StoreUnavailable(StoreError):
    """A store operation kept failing with a (probably transient) storage fault after its retries."""


class StoreCorrupt(StoreError):
    """The database file is damaged or is not a job store: nothing can be trusted until it is replaced."""


#: OSError numbers that mean the disk, not the job, is at fault.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS})


def is_storage_fault(exc: BaseException) -> bool:
    """True if ``exc`` is the storage failing (retry the work later) rather than the work itself."""
    if isinstance(exc, StoreUnavailable | sqlite3.OperationalError):
        return True
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def is_corruption(exc: BaseException) -> bool:
    """``sqlite3.DatabaseError`` itself (not a subclass such as IntegrityError) is SQLite's word for a
    damaged file: "database disk image is malformed", "file is not a database"."""
    return isinstance(exc, StoreCorrupt) or type(exc) is sqlite3.DatabaseError


class StoreHealth:
    """What a store remembers of its faults: the corruption that stops the server, and the write
    failure that outlasted the retries (cleared by the next write that succeeds). Shared by the
    SQLite and PostgreSQL stores, whose drivers raise different exceptions for the same two events."""

    def __init__(self) -> None:
        self._write_failure: str | None = None
        self._corruption: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the store cannot serve right now (corruption, or writes failing), or None."""
        return self._corruption or self._write_failure

    @property
    def corrupt(self) -> bool:
        return self._corruption is not None

    def _raise_if_corrupt(self, exc: BaseException, corrupt: bool, where: str, advice: str) -> None:
        """Remember and raise ``StoreCorrupt`` for a driver error that means a damaged database."""
        if corrupt:
            self._corruption = f"{where}: {exc}"
            raise StoreCorrupt(f"{self._corruption} ({advice})") from exc

    def _note_outcome(self, write: bool, failure: str | None = None) -> None:
        """A write that failed past its retries (``failure``) or succeeded; reads change nothing."""
        if write:
            self._write_failure = failure
