"""API keys as tenants: who is asking, and which jobs they may see.

A job belongs to the key that created it. The store keeps the key's *owner id* (the hex sha256 of the
key, never the key), and a key lists, reads, streams, downloads and deletes only its own jobs; anyone
else's answer 404 exactly like ids that do not exist, so an id says nothing about whether it exists.
An operator key (``--admin-key``) sees every job, including those created before keys were tenants
(rows without an owner). Without any key configured the server has one tenant, as before: every
caller sees every job, and jobs have no owner.

Keys are held only as sha256 digests, in memory as in the store. A presented key is hashed and
compared with every configured digest in constant time (``hmac.compare_digest`` against all of them,
so the time taken says nothing about which one nearly matched). A configured key written
``sha256:<64 hex digits>`` is taken as that digest, so a deployment can keep only digests in its
environment and files (``python -c "import hashlib; print(hashlib.sha256(b'KEY').hexdigest())"``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from server.store import Job

_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


def owner_id(key: bytes) -> str:
    """The owner id the store records for jobs created with ``key``: its hex sha256."""
    return hashlib.sha256(key).hexdigest()


def _digest_of(configured: str) -> str:
    given = _DIGEST.fullmatch(configured.strip())
    return given.group(1).lower() if given else owner_id(configured.encode())


@dataclass(frozen=True)
class Caller:
    """The party behind a request: the owner id its jobs get, and whether it sees everyone's."""

    owner: str | None
    sees_all: bool

    def may_see(self, job: Job) -> bool:
        return self.sees_all or (job.owner is not None and job.owner == self.owner)

    @property
    def scope(self) -> str | None:
        """The owner whose jobs a listing shows; None: every job."""
        return None if self.sees_all else self.owner


#: Every caller of a server without keys: one tenant, sees everything, creates jobs without an owner.
SINGLE_TENANT = Caller(owner=None, sees_all=True)


class KeyRing:
    """The configured tenant and operator keys, as digests."""

    def __init__(self, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = ()) -> None:
        entries = [(_digest_of(k), False) for k in api_keys] + [(_digest_of(k), True) for k in admin_keys]
        # An operator key listed as a tenant key too stays an operator's.
        admins = {digest for digest, admin in entries if admin}
        self._entries = [(bytes.fromhex(d), d in admins) for d in dict.fromkeys(d for d, _ in entries)]

    @property
    def enabled(self) -> bool:
        """Keys are configured, so every request but the public ones needs one."""
        return bool(self._entries)

    def caller(self, presented: bytes) -> Caller | None:
        """The caller a presented key authenticates, or None. Compares against every digest."""
        given = hashlib.sha256(presented).digest()
        found = None
        for digest, admin in self._entries:
            if hmac.compare_digest(given, digest):
                found = Caller(owner=digest.hex(), sees_all=admin)
        return found
