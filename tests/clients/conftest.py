"""Live servers for the client tests: the real app (tests/server/conftest.py's running_server) hosting
the tiny Wan pipeline with an untrained vq/mq/ta reward model. Session-scoped: the client suites share
them and every test leaves no job running."""

from __future__ import annotations

import pytest

from tests.server.conftest import HANG_S, hosted_wan, running_server  # noqa: F401 - hosted_wan is a fixture

#: A small, fast request: 32x32, 9 frames, 2 steps.
FAST = {"size": "32x32", "num_frames": 9, "num_inference_steps": 2}
#: A request that runs until cancelled (about a second per 100 steps here).
LONG = {"size": "32x32", "num_frames": 5, "num_inference_steps": 400}


@pytest.fixture(scope="session")
def server_url(hosted_wan, tmp_path_factory):  # noqa: F811
    with running_server(tmp_path_factory.mktemp("clients"), {"tiny-wan": hosted_wan}, max_batch=4,
                        batch_wait_ms=20) as (url, _):
        yield url


@pytest.fixture(scope="session")
def batch_of_four_url(hosted_wan, tmp_path_factory):  # noqa: F811
    """A server whose batches start only when four jobs of a shape are queued: which jobs share a batch
    is then a fact, not a race between the clients' requests and a batch-wait window. (A single job
    here would wait ``HANG_S``: only full batches belong on it.)"""
    with running_server(tmp_path_factory.mktemp("clients-batch"), {"tiny-wan": hosted_wan}, max_batch=4,
                        batch_wait_ms=HANG_S * 1000) as (url, _):
        yield url


@pytest.fixture(scope="session")
def queue_of_one_url(hosted_wan, tmp_path_factory):  # noqa: F811
    """A server that accepts one active job: the second concurrent create gets 429 + Retry-After."""
    with running_server(tmp_path_factory.mktemp("clients-429"), {"tiny-wan": hosted_wan}, max_queue=1) as (url, _):
        yield url


@pytest.fixture(scope="session")
def auth_url(hosted_wan, tmp_path_factory):  # noqa: F811
    with running_server(tmp_path_factory.mktemp("clients-auth"), {"tiny-wan": hosted_wan},
                        api_keys=("sk-good",)) as (url, _):
        yield url
