"""A real server on a free loopback port, in a thread of the test process (uvicorn + the engine)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace

import httpx
import pytest

from guidance.demo import DEFAULT_SHAPE
from guidance.reward_model import init_reward_model
from server.app import create_app
from server.config import ServerConfig
from server.hosted_model import HostedModel
from server.schema import Limits
from server.store.sqlite import JobStore
from tools.in_process import free_port, serving_app

#: How long a test waits for a state before calling it a hang. Never a measure of speed: on a 2-core
#: machine with both cores busy, a tiny job that takes a second when quiet can take a minute.
HANG_S = 600.0


@pytest.fixture(scope="session")
def hosted_wan(tiny_family):
    """The tiny Wan pipeline with an untrained 3-objective reward model, as the server hosts it."""
    family = tiny_family("wan")
    reward = init_reward_model(family, ["vq", "mq", "ta"], num_blocks=1, seed=0)
    return HostedModel("tiny-wan", family, reward, None, DEFAULT_SHAPE.__class__(32, 32, 9), 4)


@pytest.fixture(scope="module")
def hosted_i2v(tiny_family):
    """The tiny Wan 2.1 image-to-video pipeline with an untrained 3-objective reward model, one per module."""
    family = tiny_family("wan-i2v")
    reward = init_reward_model(family, ["vq", "mq", "ta"], num_blocks=1, seed=0)
    return HostedModel("tiny-wan-i2v", family, reward, None, DEFAULT_SHAPE.__class__(32, 32, 9), 4)


@contextmanager
def running_server(tmp_path, models, **overrides):
    """``http``: the uvicorn protocol class (default: the bounded reads ``nrg serve`` runs with)."""
    limits = overrides.pop("limits", Limits(max_steps=400))
    http = overrides.pop("http", None)
    config = replace(ServerConfig(data_dir=tmp_path / "data", port=free_port(), limits=limits), **overrides)
    app = create_app(config, models)
    with serving_app(app, config.port, grace_s=1, start_timeout_s=HANG_S, http=http) as url:
        yield url, app


def wan_pair_fixtures(limits: Limits, name: str):
    """A module's ``server`` (tiny Wan text-to-video and image-to-video hosted, batches of 2, ``limits``)
    and ``client`` (httpx on it) fixtures: assign both, ``server, client = wan_pair_fixtures(...)``."""

    @pytest.fixture(scope="module")
    def server(hosted_wan, hosted_i2v, tmp_path_factory):
        with running_server(tmp_path_factory.mktemp(name), {"tiny-wan": hosted_wan, "tiny-wan-i2v": hosted_i2v},
                            max_batch=2, limits=limits) as (url, app):
            yield url, app

    @pytest.fixture()
    def client(server):
        with httpx.Client(base_url=server[0], timeout=120) as c:
            yield c

    return server, client


def finished_after_restart(app, fields: dict, tmp_path, models: dict, limits: Limits) -> dict:
    """Store a job of ``fields`` (resolved by ``app``, its inputs with it) in a fresh data directory, start
    a new server on that directory and return the job as it ends there: what survives a restart."""
    spec, inputs = app.state.runtime.resolver.resolve_with_inputs(fields)
    store = JobStore(tmp_path / "data")
    job = store.create(replace(spec, seed=5), inputs=inputs)
    store.close()
    with running_server(tmp_path, models, limits=limits) as (url, _), httpx.Client(base_url=url, timeout=120) as http:
        return wait_for(http, job.id)


@contextmanager
def full_batches_only(app):
    """Inside: an idle engine starts a batch only once ``max_batch`` jobs of its key are queued, so which
    jobs share a batch does not depend on how fast the test posts them (a batch-wait window does).
    Only for jobs that fill a batch: a partial one waits ``HANG_S``. The server's wait comes back after."""
    engine = app.state.runtime.engine
    saved, engine.policy.batch_wait_s = engine.policy.batch_wait_s, HANG_S
    try:
        yield
    finally:
        engine.policy.batch_wait_s = saved
        engine.wake()  # a job that waited under the long window is planned again with the old one


def until(condition, what: str, hang_after_s: float = HANG_S, poll_s: float = 0.05):
    """Poll ``condition`` until it is truthy and return its value. Tests wait for a state, never for a
    time: ``hang_after_s`` only turns a hang into a failure, so it is far beyond what any step takes
    on a machine whose cores are all busy."""
    deadline = time.monotonic() + hang_after_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not {what} after {hang_after_s:.0f} s"
        time.sleep(poll_s)
    return value


def wait_for(client: httpx.Client, video_id: str, statuses=("completed", "failed", "cancelled"),
             timeout=HANG_S):
    """The job once its status is one of ``statuses``; ``timeout`` only stops a hang (see ``until``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{video_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{video_id} did not reach {statuses}; last: {job}")


def decoded(content: bytes):
    """An mp4's frames, uint8 [F, H, W, 3]."""
    import io

    import av
    import numpy as np

    with av.open(io.BytesIO(content)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
