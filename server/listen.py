"""Binding the listening socket before anything is announced or loaded.

uvicorn binds only once it starts, after minutes of model loading and after ``nrg serve`` has printed
its URL; a busy port then ends in a traceback ending ``[Errno 98] address already in use``. Binding
first fails in a second, with one line that says what to do.
"""

from __future__ import annotations

import errno
import socket


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it); ``ValueError`` naming the flag to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts need no TIME_WAIT
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is already in use (another nrg serve, e.g. `make serve`?); "
                             f"stop it or choose another port with --port") from None
        if exc.errno == errno.EACCES:
            raise ValueError(f"port {port} on {host}: permission denied (ports below 1024 need privileges); "
                             f"choose another with --port") from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port") from None
    sock.set_inheritable(True)
    return sock
