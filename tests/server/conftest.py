"""A real server on a free loopback port, in a thread of the test process (uvicorn + the engine)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import httpx
import pytest
import uvicorn

from guidance.demo import DEFAULT_SHAPE
from guidance.reward_model import init_reward_model
from server.app import create_app
from server.config import ServerConfig
from server.hosted_model import HostedModel
from server.read_timeouts import bounded_protocol
from server.schema import Limits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def hosted_wan(tiny_family):
    """The tiny Wan pipeline with an untrained 3-objective reward model, as the server hosts it."""
    family = tiny_family("wan")
    reward = init_reward_model(family, ["vq", "mq", "ta"], num_blocks=1, seed=0)
    return HostedModel("tiny-wan", family, reward, None, DEFAULT_SHAPE.__class__(32, 32, 9), 4)


@contextmanager
def running_server(tmp_path, models, **overrides):
    """``http``: the uvicorn protocol class (default: the bounded reads ``nrg serve`` runs with)."""
    limits = overrides.pop("limits", Limits(max_steps=400))
    http = overrides.pop("http", None) or bounded_protocol()
    config = replace(ServerConfig(data_dir=tmp_path / "data", port=free_port(), limits=limits), **overrides)
    app = create_app(config, models)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning",
                                           timeout_graceful_shutdown=1, http=http))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(client: httpx.Client, video_id: str, statuses=("completed", "failed", "cancelled"), timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{video_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{video_id} did not reach {statuses}; last: {job}")
