"""The job-row statements the SQLite and PostgreSQL backends share, written once with each backend's
parameter marker, so that the two cannot drift apart on what finishing, re-queueing or listing a job
means."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from server.store.base import ACTIVE, COMPLETED, IN_PROGRESS, QUEUED, WEBHOOK_PENDING, WEBHOOK_WAITING, Job
from server.store.files import VideoFiles


class SqlJobRows(VideoFiles):
    """The statements both SQL backends write alike, with the backend's parameter marker ``P``
    (``?`` for SQLite, ``%s`` for psycopg) and its clock ``NOW`` (seconds since the epoch, an SQL
    expression); each backend supplies ``_query``, ``_write``, ``_returning`` and ``_job``."""

    P: str
    NOW: str

    def get(self, job_id: str) -> Job | None:
        rows = self._query(f"SELECT * FROM jobs WHERE id = {self.P}", (job_id,))
        return self._job(rows[0]) if rows else None

    def list(self, after: str | None, limit: int, order: str, owner: str | None = None) -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``asc``/``desc``) after the job ``after``; and has_more.
        With ``owner``, only that owner's jobs, and ``after`` must be one of them (KeyError otherwise,
        as for an id that does not exist)."""
        p = self.P
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        conditions, args = ([f"owner = {p}"], [owner]) if owner is not None else ([], [])
        if after is not None:
            anchor = self._query(f"SELECT seq FROM jobs WHERE {' AND '.join([f'id = {p}', *conditions])}",
                                 (after, *args))
            if not anchor:
                raise KeyError(after)
            conditions, args = [*conditions, f"seq {compare} {p}"], [*args, anchor[0]["seq"]]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._query(f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT {p}", (*args, limit + 1))
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def set_progress(self, job_id: str, progress: int) -> None:
        self.set_progress_many({job_id: progress})

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: tuple[str, str] | None = None, worker: str | None = None) -> bool:
        """queued/in_progress -> a finished status; False if it was already finished. With ``worker``,
        False too when another worker holds the job: ``worker``'s lease ran out (it lost the store for
        longer than a lease) and the job was taken over; the new holder records it. A queued job is
        nobody's, so the run that finished it may still record it. A waiting webhook becomes due in the
        same statement: the outcome and the delivery it owes are written together or not at all."""
        p = self.P
        code, message = error or (None, None)
        if worker is None:
            holder, args = f"status IN ({p}, {p})", ACTIVE
        else:
            holder, args = f"(status = {p} OR (status = {p} AND worker = {p}))", (QUEUED, IN_PROGRESS, worker)
        waiting = f"webhook_status = '{WEBHOOK_WAITING}'"
        return self._write(
            f"UPDATE jobs SET status = {p}, completed_at = {p}, lease_until = NULL, progress = CASE WHEN {p} = "
            f"'completed' THEN 100 ELSE progress END, result = {p}, error_code = {p}, error_message = {p}, "
            f"webhook_status = CASE WHEN {waiting} THEN '{WEBHOOK_PENDING}' ELSE webhook_status END, "
            f"webhook_due_at = CASE WHEN {waiting} THEN {self.NOW} ELSE webhook_due_at END "
            f"WHERE id = {p} AND {holder}",
            (status, time.time(), status, json.dumps(result or {}), code, message, job_id, *args)) == 1

    def requeue(self, job_id: str) -> None:
        p = self.P
        self._write("UPDATE jobs SET status = {p}, progress = 0, started_at = NULL, worker = NULL, lease_until = NULL "
                    "WHERE id = {p} AND status = {p}".format(p=p), (QUEUED, job_id, IN_PROGRESS))

    def release(self, worker: str) -> list[str]:
        """Re-queue the jobs running under ``worker``'s name (never another worker's); their ids."""
        p = self.P
        rows = self._returning(f"UPDATE jobs SET status = {p}, progress = 0, started_at = NULL, worker = NULL, "
                               f"lease_until = NULL WHERE status = {p} AND worker = {p} RETURNING id",
                               (QUEUED, IN_PROGRESS, worker))
        return [r["id"] for r in rows]

    def _completed_ids(self) -> list[str]:
        return [r["id"] for r in self._query(f"SELECT id FROM jobs WHERE status = {self.P} ORDER BY seq", (COMPLETED,))]

    def _input_rows(self, job_id: str, inputs: Mapping[str, bytes] | None, suffix: str = "") -> list[tuple[str, tuple]]:
        """The statements that store a new job's input files (``create`` runs them with the job's row)."""
        p = self.P
        return [(f"INSERT INTO job_inputs (job_id, key, data) VALUES ({p}, {p}, {p}){suffix}", (job_id, key, data))
                for key, data in (inputs or {}).items()]

    def read_input(self, job_id: str, key: str) -> bytes | None:
        """An input file the job was created with (its ``input_reference`` image), or None."""
        p = self.P
        rows = self._query(f"SELECT data FROM job_inputs WHERE job_id = {p} AND key = {p}", (job_id, key))
        return bytes(rows[0]["data"]) if rows else None

    def delete(self, job_id: str) -> None:
        """The job, its input files (one transaction) and its outputs."""
        p = self.P
        self._transaction([(f"DELETE FROM jobs WHERE id = {p}", (job_id,)),
                           (f"DELETE FROM job_inputs WHERE job_id = {p}", (job_id,))])
        self.remove_outputs(job_id)
