"""A throwaway PostgreSQL for tests and benchmarks: a fresh cluster in a temp dir on a free loopback port.

The server binaries refuse to run as root, so when this runs as root the cluster belongs to an
unprivileged user (``nrgtest``, created if missing) and is started with ``runuser``. Tuned for speed,
not durability (``fsync=off``): never put data you want to keep in it.

::

    with local_postgres() as pg:
        store = pg.url()              # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.create_database("bench")   # then pg.url("bench")
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "nrgtest"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on the PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    bin_dir: Path
    data: Path
    port: int
    as_user: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.ctl("-l", str(self.data / "server.log"), "-o",
                 f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (``fast``: every session is cut, as a crash or a failover cuts them), stay down for
        ``down_s`` seconds, and start again on the same port with the same data."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        """Creates an empty database (needs psycopg) and returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _unprivileged_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", USER, "--"]


@contextlib.contextmanager
def local_postgres() -> Iterator[PgServer]:
    """A running cluster (``initdb`` + ``pg_ctl start``) for the ``with`` block; stopped and deleted after.

    Raises :class:`PostgresUnavailable` when the binaries are not installed."""
    binaries = bin_dir()
    if binaries is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs "
                                  "them (apt-get install postgresql)")
    as_user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="nrg-pg-"))
    try:
        data = root / "data"
        data.mkdir()
        if as_user:
            shutil.chown(root, USER)
            shutil.chown(data, USER)
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        server = PgServer(binaries, data, free_port(), as_user)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
