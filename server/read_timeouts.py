"""Bounds on how long a client may take to send a request (slowloris).

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a client takes
to send one: a connection that sends half a header, or a body a byte every few seconds, holds its
socket forever, and enough of them exhaust the process's file descriptors. :func:`bounded_protocol`
gives uvicorn's own HTTP protocol (whichever parser ``http="auto"`` picks) a timer:

* a request's headers must be complete ``header_timeout_s`` after its first byte (or after the
  connection opened, for the first request); otherwise the server answers ``408 request_timeout``
  and closes the connection;
* its body must be complete ``body_timeout_s`` after its headers; otherwise the connection is closed
  (the route reading the body sees the client gone).

Nothing is timed while the server answers (an SSE stream may last hours) nor between requests
(``timeout_keep_alive`` does that). The timer follows only the protocol's ``cycle``, the request it is
answering, which both of uvicorn's parsers set once a request's headers are complete and whose
``more_body`` they clear once its body is: no second parser.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("nrg.server")

HEADER_TIMEOUT_S = 20.0
BODY_TIMEOUT_S = 60.0


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": {"message": f"request headers not received within {seconds:g} s",
                                 "type": "invalid_request_error", "param": None, "code": "request_timeout"}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"x-content-type-options: nosniff\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def bounded_protocol(base: type[asyncio.Protocol] = AutoHTTPProtocol, header_timeout_s: float = HEADER_TIMEOUT_S,
                     body_timeout_s: float = BODY_TIMEOUT_S) -> type[asyncio.Protocol]:
    """``base`` (a uvicorn HTTP protocol class) with the read bounds above; pass it as ``uvicorn.Config(http=)``."""

    class BoundedReads(base):  # type: ignore[misc, valid-type]
        _read_timer: asyncio.TimerHandle | None = None
        _known_cycle: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm(header_timeout_s, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            awaiting_body = self._body_pending()
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.cycle is not self._known_cycle:  # a request's headers are complete
                self._known_cycle = self.cycle
                self._disarm()
                if self._body_pending():
                    self._arm(body_timeout_s, self._body_too_slow)
            elif awaiting_body:
                if not self._body_pending():
                    self._disarm()
            elif self._read_timer is None and (self.cycle is None or self.cycle.response_complete):
                # The first bytes of the next request (bytes sent while an answer is still going out
                # wait for it, unread: nothing to time yet).
                self._arm(header_timeout_s, self._headers_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _body_pending(self) -> bool:
            return self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete

        def _arm(self, seconds: float, callback) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _headers_too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                log.info("closing a connection from %s: no complete request headers within %g s",
                         _peer(self.client), header_timeout_s)
                self.transport.write(_timeout_response(header_timeout_s))
                self.transport.close()

        def _body_too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                log.info("closing a connection from %s: request body not received within %g s",
                         _peer(self.client), body_timeout_s)
                self.transport.close()

    BoundedReads.__name__ = BoundedReads.__qualname__ = f"Bounded{base.__name__}"
    return BoundedReads


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"
