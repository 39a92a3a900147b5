"""Ray Serve (``server.ray_app``): a local Ray on CPU, the API ingress and two CPU worker replicas over a
real PostgreSQL, on the tiny Wan pipeline; one job posted to the ingress over HTTP runs on one of them.

Skipped, with the exception in the reason, only when ``ray.init`` cannot start Ray on this machine.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import pytest

from tests.server.conftest import free_port, wait_for
from tests.server.postgres import pg_server  # noqa: F401 - fixture


def _ctx(metrics, low=1, high=4, target=2):
    return SimpleNamespace(aggregated_metrics=metrics, capacity_adjusted_min_replicas=low,
                           capacity_adjusted_max_replicas=high, target_num_replicas=target, policy_state={})


def test_queue_depth_policy_follows_the_store_queue_within_bounds():
    from server.ray_app import queue_depth_policy

    def replicas(queued, held, low=1, high=4):
        ids = [f"r{i}" for i in range(len(held))]
        metrics = {"queued": dict.fromkeys(ids, float(queued)), "held": dict(zip(ids, map(float, held))),
                   "capacity": dict.fromkeys(ids, 4.0)}
        return queue_depth_policy(_ctx(metrics, low, high))[0]

    assert replicas(0, [0, 0]) == 1            # idle: down to the floor
    assert replicas(9, [0]) == 3               # 9 queued, 4 per worker
    assert replicas(6, [4, 2]) == 3            # running jobs count too
    assert replicas(100, [4, 4]) == 4          # never above max_workers
    assert replicas(0, [0], low=2) == 2        # never below min_workers
    assert queue_depth_policy(_ctx({}, target=3))[0] == 3  # nothing reported yet: unchanged


def test_worker_options_fixed_or_autoscaled():
    from server.ray_app import _worker_options

    fixed = _worker_options({"flags": [], "workers": 2, "worker_gpus": 0})
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"]["num_gpus"] == 0
    assert "autoscaling_config" not in fixed
    scaled = _worker_options({"flags": [], "workers": 2, "min_workers": 1, "max_workers": 8})
    assert scaled["ray_actor_options"]["num_gpus"] == 1  # one replica per GPU by default
    auto = scaled["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (1, 8, 2)
    assert auto["policy"]["policy_function"] == "server.ray_app:queue_depth_policy"
    with pytest.raises(ValueError, match="min_workers"):
        _worker_options({"flags": [], "min_workers": 3, "max_workers": 2})


def test_a_store_shared_by_the_processes_is_required():
    from server.ray_app import server_config_of

    with pytest.raises(ValueError, match="--store postgresql://"):
        server_config_of(["--model", "x=/nowhere"], "worker")


@pytest.mark.slow
def test_a_job_posted_to_the_ingress_runs_on_one_of_two_worker_replicas(pg_server, tiny_dir, tmp_path):  # noqa: F811
    import psycopg
    import ray
    from ray import serve

    from server import ray_app

    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ray_serve")
    url = pg_server.url("ray_serve")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - only Ray failing to start on this machine skips
        pytest.skip(f"Ray cannot start on this machine: ray.init raised {type(exc).__name__}: {exc}")
    port = free_port()
    flags = ["--store", url, "--model", f"tiny={tiny_dir('wan')}", "--data-dir", str(tmp_path / "data"),
             "--device", "cpu", "--batch-wait-ms", "0"]
    try:
        ray_app.deploy({"flags": flags, "workers": 2, "worker_gpus": 0, "worker_cpus": 0.5, "api_cpus": 0.5},
                       port=port)
        workers = ray_app.worker_ids()
        assert len(workers) == 2, workers
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the ingress never became ready"
                time.sleep(0.2)
            response = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 3, "size": "32x32",
                                                       "num_frames": 9, "num_inference_steps": 2})
            assert response.status_code == 200, response.text
            video_id = response.json()["id"]
            assert wait_for(client, video_id, timeout=60)["status"] == "completed"
            content = client.get(f"/v1/videos/{video_id}/content")
            assert content.status_code == 200 and len(content.content) > 0
        with psycopg.connect(url) as conn:
            (worker,) = conn.execute("SELECT worker FROM jobs WHERE id = %s", (video_id,)).fetchone()
        assert worker in workers
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
