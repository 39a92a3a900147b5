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
