"""The job store's files: each job's video and thumbnail in ``DATA_DIR/videos``.

Every backend keeps them alike (SQLite beside its database, PostgreSQL in a directory that a
scaled-out deployment's processes share); the backend only says which jobs completed.
"""

from __future__ import annotations

from pathlib import Path


class VideoFiles:
    """The videos and thumbnails in ``DATA_DIR/videos`` (shared by every backend)."""

    data_dir: Path
    video_dir: Path

    def video_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.mp4"

    def thumbnail_path(self, job_id: str) -> Path:
        return self.video_dir / f"{job_id}.webp"

    def remove_outputs(self, job_id: str) -> None:
        """Remove a job's video and thumbnail, if any (a cancelled or deleted job leaves no files)."""
        self.video_path(job_id).unlink(missing_ok=True)
        self.thumbnail_path(job_id).unlink(missing_ok=True)

    def missing_outputs(self) -> list[str]:
        """Completed jobs whose video file is gone (deleted by hand, a restored backup, a lost disk)."""
        return [job_id for job_id in self._completed_ids() if not self.video_path(job_id).is_file()]

    def _completed_ids(self) -> list[str]:
        raise NotImplementedError
