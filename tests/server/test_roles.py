"""What a process of each ``--role`` serves (``server.runtime``, ``server.api.routers_for``): a worker
mounts no ``/v1/videos`` router, an API process runs no engine and queues jobs for the workers.

In this process, over a PostgreSQL store, through the real lifespan; ``test_scale_out.py`` runs the
roles as separate processes that work together."""

from __future__ import annotations

import httpx
import pytest

from server.app import create_app
from server.config import ServerConfig
from server.engine import Engine
from server.roles import FrontEndOnly
from tests.server.conftest import running_server
from tests.server.postgres import pg_server, pg_url  # noqa: F401 - fixtures


def test_a_worker_mounts_no_video_routes_but_serves_ops_and_models(hosted_wan, pg_url, tmp_path):  # noqa: F811
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, role="worker", store_url=pg_url, worker_id="w1") as (
            url, app):
        runtime = app.state.runtime
        assert isinstance(runtime.engine, Engine) and runtime.lease is not None
        assert runtime.listener is None  # it serves no event stream, so it LISTENs to nothing
        with httpx.Client(base_url=url, timeout=60) as client:
            for method, path in (("POST", "/v1/videos"), ("GET", "/v1/videos"), ("GET", "/v1/videos/v1"),
                                 ("DELETE", "/v1/videos/v1"), ("GET", "/v1/videos/v1/content"),
                                 ("GET", "/v1/videos/v1/events")):
                response = client.request(method, path)
                assert response.status_code == 404, (method, path)
                assert response.json()["error"]["message"] == f"no route {path}"
            assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/v1/videos")]
            assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-wan"
            assert client.get("/health").json() == {"status": "ok"}
            assert 'nrg_worker_info{role="worker",worker="w1"} 1.0' in client.get("/metrics").text


def test_an_api_process_runs_no_engine_and_queues_jobs_for_the_workers(hosted_wan, pg_url, tmp_path):  # noqa: F811
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, role="api", store_url=pg_url, worker_id="api1") as (
            url, app):
        runtime = app.state.runtime
        assert isinstance(runtime.engine, FrontEndOnly) and runtime.lease is None
        assert runtime.listener is not None  # the workers' events reach its SSE streams over LISTEN
        with httpx.Client(base_url=url, timeout=60) as client:
            assert 'nrg_worker_info{role="api",worker="api1"} 1.0' in client.get("/metrics").text
            assert client.get("/ready").json() == {"ready": True, "queued": 0}
            video = client.post("/v1/videos", json={"prompt": "a red circle", "size": "32x32", "num_frames": 9,
                                                    "num_inference_steps": 1}).json()
            assert video["status"] == "queued"
            assert client.get("/ready").json() == {"ready": True, "queued": 1}  # nothing here claims it
            assert runtime.store.get(video["id"]).status == "queued"


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_split_role_needs_a_shared_store(hosted_wan, tmp_path, role):
    with pytest.raises(ValueError, match=f"--role {role} needs a store the processes share"):
        create_app(ServerConfig(data_dir=tmp_path / "data", role=role), {"tiny-wan": hosted_wan})
