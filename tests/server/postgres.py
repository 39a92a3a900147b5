"""A real PostgreSQL for the tests: a fresh cluster in a temp dir on a free loopback port.

The server binaries refuse to run as root, so when the tests run as root the cluster belongs to an
unprivileged user (``nrgtest``, created if missing) and is started with ``runuser``. The fixtures
skip, saying why, only when the binaries are not installed (``.ci/run`` installs them).

``pg_server`` (session): the running cluster; ``pg_url`` (per test): a URL of a new, empty database.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import free_port

USER = "nrgtest"
_names = itertools.count()


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    return None


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


@pytest.fixture(scope="session")
def pg_server():
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                           check=True, capture_output=True)
        as_user = ["runuser", "-u", USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="nrg-pg-"))
    data = root / "data"
    data.mkdir()
    if as_user:
        shutil.chown(root, USER)
        shutil.chown(data, USER)
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    server = PgServer(bin_dir, data, free_port(), as_user)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A new, empty database on the session's cluster."""
    import psycopg

    name = f"nrg_{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_server.url(name)
