"""The operator's webhook settings (``nrg serve --webhook-*``), apart from what acts on them, so that
the configuration and the command line read them without loading anything."""

from __future__ import annotations

from dataclasses import dataclass

#: Waits between attempts: 6 attempts over about an hour, then the webhook is failed.
DEFAULT_BACKOFF_S = (10.0, 60.0, 300.0, 900.0, 2400.0)
#: Connect and read timeout of one attempt, and the DNS lookup's.
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WebhookSettings:
    #: ``--webhook-allow``: the destinations (``server.webhooks.allow_rules``); none: webhooks are off.
    allow: tuple[str, ...] = ()
    #: ``--webhook-secret``: the signing key, ``whsec_<base64>`` or raw text.
    secret: str | None = None
    #: ``--webhook-backoff``: the waits between attempts, so ``len + 1`` attempts in all.
    backoff_s: tuple[float, ...] = DEFAULT_BACKOFF_S
    #: ``--webhook-timeout``: each attempt's connect and read timeout (and its DNS lookup's).
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: How often an idle deliverer looks for due webhooks in the store (another process may have
    #: finished the job); tests shorten it.
    poll_s: float = 0.5
    #: Attempts in flight at once per process, so one slow receiver does not hold up the others.
    concurrency: int = 4

    @property
    def enabled(self) -> bool:
        return bool(self.allow)

    @property
    def attempts(self) -> int:
        return len(self.backoff_s) + 1

    @property
    def lease_s(self) -> float:
        """How long a claimed attempt stays this process's: its lookup, connect, write and read, with
        room to spare; past it another deliverer may try again."""
        return 4 * self.timeout_s + 5.0

    def __post_init__(self) -> None:
        """Every mistake fails here, at the start of ``nrg serve``, before the models load."""
        from server.webhooks.allow_rules import parse_rule
        from server.webhooks.signing import secret_key

        for rule in self.allow:
            parse_rule(rule)
        if self.allow and not self.secret:
            raise ValueError("--webhook-allow needs --webhook-secret (NRG_WEBHOOK_SECRET): deliveries are signed")
        if self.secret:
            secret_key(self.secret)
        if any(not 0 <= wait < float("inf") for wait in self.backoff_s):
            raise ValueError(f"--webhook-backoff: waits must be seconds >= 0; got {list(self.backoff_s)}")
        if not 0 < self.timeout_s < float("inf"):
            raise ValueError(f"--webhook-timeout must be seconds > 0; got {self.timeout_s}")
        if self.concurrency < 1 or not self.poll_s > 0:
            raise ValueError("webhook concurrency must be >= 1 and poll_s > 0")
