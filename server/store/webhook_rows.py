"""The webhook statements both SQL backends share: claiming due webhooks, recording attempts.

A job's webhook lives in its own row (``webhook_status``, ``webhook_attempts``, ``webhook_due_at``,
``webhook_worker``, ``webhook_error``), so that finishing a job and owing its webhook are one statement
(``SqlJobRows.finish``). ``webhook_due_at`` is when the next attempt is due, on the backend's clock; a
claim moves it to the end of the claim's lease, so an attempt whose process died is retried once the
lease runs out, by any deliverer, and the claim's attempt number fences the outcome: a deliverer whose
claim was taken over cannot record over the one that took it.
"""

from __future__ import annotations

from server.store.base import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING, Job

RECORDED_STATUSES = (WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED)


class SqlWebhookRows:
    """Mixed into a backend beside ``SqlJobRows``: ``P`` and ``NOW`` as there; ``LOCK_CLAIMED`` what the
    claim's subquery adds so that concurrent claimers skip each other's rows (PostgreSQL's ``FOR UPDATE
    SKIP LOCKED``; nothing for SQLite, whose writes are serialised)."""

    P: str
    NOW: str
    LOCK_CLAIMED: str = ""

    def claim_webhooks(self, worker: str, limit: int, lease_s: float) -> list[Job]:
        p = self.P
        if limit < 1:
            return []
        rows = self._returning(
            f"UPDATE jobs SET webhook_attempts = webhook_attempts + 1, webhook_worker = {p}, "
            f"webhook_due_at = {self.NOW} + {p} WHERE id IN (SELECT id FROM jobs WHERE webhook_status = "
            f"'{WEBHOOK_PENDING}' AND webhook_due_at <= {self.NOW} ORDER BY webhook_due_at LIMIT {p}"
            f"{self.LOCK_CLAIMED}) AND webhook_status = '{WEBHOOK_PENDING}' RETURNING *",
            (worker, lease_s, limit))
        return [self._job(r) for r in rows]

    def record_webhook(self, job_id: str, worker: str, attempt: int, status: str, error: str | None = None,
                       retry_in_s: float | None = None) -> bool:
        p = self.P
        if status not in RECORDED_STATUSES:
            raise ValueError(f"a webhook attempt ends {', '.join(RECORDED_STATUSES)}; got {status!r}")
        if (status == WEBHOOK_PENDING) != (retry_in_s is not None):
            raise ValueError("retry_in_s goes with status pending, and only with it")
        due, args = (f"{self.NOW} + {p}", (retry_in_s,)) if retry_in_s is not None else ("NULL", ())
        return self._write(
            f"UPDATE jobs SET webhook_status = {p}, webhook_error = {p}, webhook_worker = NULL, webhook_due_at = {due} "
            f"WHERE id = {p} AND webhook_status = '{WEBHOOK_PENDING}' AND webhook_worker = {p} "
            f"AND webhook_attempts = {p}",
            (status, error, *args, job_id, worker, attempt)) == 1

    def recover_webhooks(self, worker: str) -> int:
        """Claims ``worker`` left behind become due now (others' wait for their lease to run out)."""
        p = self.P
        return self._write(
            f"UPDATE jobs SET webhook_worker = NULL, webhook_due_at = {self.NOW} "
            f"WHERE webhook_status = '{WEBHOOK_PENDING}' AND webhook_worker = {p}", (worker,))
