"""How ``nrg serve`` writes its log: readable lines, or one JSON object per line (``--log-format json``).

uvicorn's own loggers (startup, errors, the access log with its redacted query strings) are routed
through the same root handler, so a log shipper parsing JSON never meets a line in another format.
Fields a record carries as ``extra`` (``job``, ``event``, ``rewards``, ...) become keys of its object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: LogRecord attributes that are not ``extra`` fields (and uvicorn's ANSI-coloured copy of its message).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Handler(logging.StreamHandler):
    """The handler ``configure`` installs, so that a second call replaces it and leaves others alone."""


def configure(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger (uvicorn's included: start uvicorn with ``log_config=None``) to ``stream``
    (default stderr) in ``fmt``; the handler installed on the root logger."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.INFO)
        logger.propagate = True
    # httpx logs every request's full URL at INFO: a webhook_url's query may hold the receiver's token,
    # and server.webhooks logs each attempt itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
