"""Slowloris: a connection that never completes its request headers or body is closed.

The bounds are short here and the assertions only that the server eventually closes the connection
(a read returns end-of-file), with a generous guard against hanging; nothing depends on how close to
the bound the close comes.
"""

from __future__ import annotations

import importlib
import socket

import pytest

from server import serving
from server.read_timeouts import HEADER_TIMEOUT_S, bounded_protocol
from tests.server.conftest import running_server

#: A socket read waiting this long means the server kept the connection open: the test fails.
HANG_GUARD_S = 60.0
PROTOCOLS = {"h11": "uvicorn.protocols.http.h11_impl:H11Protocol",
             "httptools": "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"}


@pytest.fixture(scope="module", params=sorted(PROTOCOLS))
def server(request, hosted_wan, tmp_path_factory):
    """A server whose requests must arrive within a fraction of a second, on each uvicorn parser."""
    if request.param == "httptools":
        pytest.importorskip("httptools")
    module, name = PROTOCOLS[request.param].split(":")
    protocol = bounded_protocol(getattr(importlib.import_module(module), name), header_timeout_s=0.3,
                                body_timeout_s=0.3)
    with running_server(tmp_path_factory.mktemp("slow"), {"tiny-wan": hosted_wan}, http=protocol) as (url, _):
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=HANG_GUARD_S)


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_a_connection_that_sends_half_a_header_is_closed_with_408(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = _read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"code": "request_timeout"' in answer


def test_a_connection_that_sends_nothing_is_closed(server):
    with _connect(server) as sock:
        assert _read_to_close(sock).startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_half_a_body_is_closed(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\": ")
        assert b"HTTP/1.1 200" not in _read_to_close(sock)


def test_a_kept_alive_connection_is_bounded_for_its_next_request_too(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b'"ok"' not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        assert _read_to_close(sock).startswith(b"HTTP/1.1 408 ")


def test_complete_requests_are_answered(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _read_to_close(sock).startswith(b"HTTP/1.1 200 ")


def test_nrg_serve_runs_with_the_bounds():
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    async def app(scope, receive, send) -> None:
        raise AssertionError("not served")

    config = serving.uvicorn_config(app, "127.0.0.1", 0, log_config=None)
    assert issubclass(config.http, AutoHTTPProtocol) and config.http.__name__.startswith("Bounded")
    assert config.timeout_keep_alive <= HEADER_TIMEOUT_S
