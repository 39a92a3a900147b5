"""Redacts query strings in uvicorn's access log.

The server refuses keys in query strings, but a client that tries (``?api_key=...``) would still
leave its key in every access-log line, where log shippers copy it far and wide. Only the values of
the API's own query parameters, which hold no secrets, stay readable; every other value, and any bare
segment without ``=``, is replaced before the line is formatted. An allow-list rather than a list of
sensitive names, so that ``?x-auth=...`` or ``?sk-...`` is hidden too.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
#: Query parameters of the API (GET /v1/videos, GET /v1/videos/{id}/content): safe to log.
LOGGED_PARAMETERS = frozenset({"after", "limit", "order", "variant"})
REDACTED = "REDACTED"


def redact_query(path: str) -> str:
    """``/v1/models?api_key=sk-1&limit=2`` -> ``/v1/models?api_key=REDACTED&limit=2``."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = []
    for pair in query.split("&"):
        name, has_value, _ = pair.partition("=")
        if not has_value:
            pairs.append(REDACTED if pair else pair)
        elif name in LOGGED_PARAMETERS:
            pairs.append(pair)
        else:
            pairs.append(f"{name}={REDACTED}")
    return f"{base}?{'&'.join(pairs)}"


class RedactQueryFilter(logging.Filter):
    """For uvicorn's access records, whose args are (client, method, path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger once (idempotent; dictConfig keeps logger filters)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())
