"""A real PostgreSQL for the tests: a fresh cluster in a temp dir on a free loopback port
(:mod:`tools.local_postgres`, which the benchmarks share).

The server binaries refuse to run as root, so when the tests run as root the cluster belongs to an
unprivileged user (``nrgtest``, created if missing) and is started with ``runuser``. The fixtures
skip, saying why, only when the binaries are not installed (``.ci/run`` installs them).

``pg_server`` (session): the running cluster; ``pg_url`` (per test): a URL of a new, empty database.
"""

from __future__ import annotations

import itertools
import os

import pytest

from tools.local_postgres import USER, PgServer, bin_dir, local_postgres  # noqa: F401 - re-exported

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    if bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    with local_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server) -> str:
    """A new, empty database on the session's cluster."""
    return pg_server.create_database(f"nrg_{os.getpid()}_{next(_names)}")
