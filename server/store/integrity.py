"""The start-up check of the data directory: never serve from a damaged store, never start empty by
mistake.

A damaged SQLite file can still open and answer simple reads, so a server started over one looks
ready and then answers 500 to listing and creating jobs. ``PRAGMA quick_check`` reads every page once
(seconds for millions of rows) and catches that before the port opens. A missing or empty database
beside the videos of earlier jobs almost always means a lost or misplaced file, not a fresh start.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from server.store.errors import StoreCorrupt, StoreError

DB_NAME = "jobs.sqlite3"
RESTORE_HINT = "(move it aside or restore a backup)"


def check_data_dir(data_dir: Path, allow_empty: bool = False) -> None:
    """Raise ``StoreError`` (one line naming the file and the fix) unless ``data_dir`` can be served."""
    db_path = Path(data_dir) / DB_NAME
    video_dir = Path(data_dir) / "videos"
    jobs = 0
    if db_path.exists() and db_path.stat().st_size > 0:
        jobs = _checked_job_count(db_path)
    if jobs or allow_empty or not video_dir.is_dir():
        return
    videos = sum(1 for _ in video_dir.glob("*.mp4"))
    if videos:
        state = "has no jobs" if db_path.exists() else "is missing"
        raise StoreError(
            f"{db_path}: the job store {state} but {video_dir} holds {videos} .mp4 file(s) of earlier jobs; restore "
            f"the database from a backup, move {video_dir} aside, or pass --allow-empty-store to start empty"
        )


def _checked_job_count(db_path: Path) -> int:
    try:
        with closing(sqlite3.connect(db_path)) as db:
            # SQLite may put several lines in one problem ("*** in database main ***\nPage 11: ..."): the
            # message stays one line, as a start-up error must.
            problems = [" ".join(row[0].split()) for row in db.execute("PRAGMA quick_check") if row[0] != "ok"]
            if problems:
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise StoreCorrupt(f"{db_path}: failed its integrity check: {problems[0]}{more} {RESTORE_HINT}")
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone():
                return 0
            return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"{db_path}: failed its integrity check: {exc} {RESTORE_HINT}") from None
