"""Ray Serve (``server.ray_app``): a local Ray on CPU, the API ingress and two CPU worker replicas over a
real PostgreSQL, on the tiny Wan pipeline; one job posted to the ingress over HTTP runs on one of them.
Then one autoscaled worker replica (at most two): queued jobs bring up the second.

Skipped, with the exception in the reason, only when ``ray.init`` cannot start Ray on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path
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


@pytest.mark.parametrize("min_workers", [1, 2])
def test_a_drained_queue_scales_down_to_min_workers_after_the_60_s_delay(monkeypatch, min_workers):
    """Scale-down as Ray Serve's controller runs it: the delays are Ray Serve's, applied around a custom
    policy (``ray.serve.autoscaling_policy._apply_autoscaling_config``, private: this pins Ray 2.60's
    behaviour); the bounds are the policy's."""
    from ray.serve import autoscaling_policy
    from ray.serve.config import AutoscalingConfig

    from server.ray_app import _worker_options, queue_depth_policy

    args = {"flags": [], "workers": 3, "min_workers": min_workers, "max_workers": 4}
    config = AutoscalingConfig(**_worker_options(args)["autoscaling_config"])
    policy = autoscaling_policy._apply_autoscaling_config(queue_depth_policy)
    clock = [1000.0]
    monkeypatch.setattr(autoscaling_policy, "time", SimpleNamespace(time=lambda: clock[0]))
    state: dict = {}

    def decide(at: float, queued: float, held: list[float], current: int = 3) -> int:
        nonlocal state
        clock[0] = 1000.0 + at
        ids = [f"r{i}" for i in range(len(held))]
        ctx = _ctx({"queued": dict.fromkeys(ids, queued), "held": dict(zip(ids, held)),
                    "capacity": dict.fromkeys(ids, 4.0)}, min_workers, 4, target=current)
        ctx.config, ctx.current_num_replicas, ctx.total_num_requests, ctx.policy_state = config, current, 0, state
        decision, state = policy(ctx)
        return decision

    assert decide(0, 0.0, [4.0, 4.0, 4.0]) == 3    # the queue drained; every replica still runs a full batch
    assert decide(10, 0.0, [0.0, 0.0, 0.0]) == 3   # all idle: fewer replicas would do, but not yet
    assert decide(69, 0.0, [0.0, 0.0, 0.0]) == 3
    assert decide(70, 0.0, [0.0, 0.0, 0.0]) == min_workers  # 60 s after it first wanted fewer, never below min
    low = [0.0] * min_workers
    assert decide(71, 12.0, low, current=min_workers) == min_workers  # jobs again: up after 2 s
    assert decide(73, 12.0, low, current=min_workers) == 3


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


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance on CPU for this module's deployments; the port of Serve's HTTP proxy (Serve
    starts once per Ray instance, so every deployment here shares it)."""
    import os

    import ray
    from ray import serve

    # Ray Serve's controller kills an HTTP proxy that is not ready within 5 s (and then `serve.start`
    # fails): on a machine whose cores are busy a new Ray worker process takes longer than that to
    # start. The processes Ray starts inherit these settings; they are Ray's own, read from the env.
    patient = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "300", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "300"}
    saved = {key: os.environ.get(key) for key in patient}
    os.environ.update(patient)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - only Ray failing to start on this machine skips
        pytest.skip(f"Ray cannot start on this machine: ray.init raised {type(exc).__name__}: {exc}")
    try:
        yield free_port()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def deployed(local_ray, pg_server, tiny_dir, tmp_path):  # noqa: F811
    """``deployed(**args)``: both applications on a new database; (HTTP client, store URL). Removed after."""
    import psycopg
    from ray import serve

    from server import ray_app

    name = f"ray_{tmp_path.name[-40:]}".replace("-", "_").lower()
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url, port = pg_server.url(name), local_ray
    clients = []

    def deploy(*extra_flags, **args):
        flags = ["--store", url, "--model", f"tiny={tiny_dir('wan')}", "--data-dir", str(tmp_path / "data"),
                 "--device", "cpu", "--batch-wait-ms", "0", *extra_flags]
        ray_app.deploy({"flags": flags, "worker_gpus": 0, "worker_cpus": 0.5, "api_cpus": 0.5, **args}, port=port)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        clients.append(client)
        # Ray starts replicas in the background after serve.run returns; wait for the states Ray reports
        # (both applications RUNNING, the ingress ready), never for a time. The deadline only stops a
        # hang: on a loaded machine replicas take minutes to come up.
        _until(lambda: all(serve.status().applications[app].status == "RUNNING"
                           for app in (ray_app.API_APP, ray_app.WORKER_APP)), "both applications RUNNING")
        _until(lambda: client.get("/ready").status_code == 200, "the ingress ready")
        return client, url

    try:
        yield deploy
    finally:
        for client in clients:
            client.close()
        for app in (ray_app.API_APP, ray_app.WORKER_APP):
            serve.delete(app)


def _until(condition, what: str, hang_after_s: float = 600.0) -> None:
    deadline = time.monotonic() + hang_after_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {hang_after_s:.0f} s"
        time.sleep(0.2)


def _workers_of(url: str, status: str | None = None) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, worker FROM jobs WHERE %s::text IS NULL OR status = %s", (status, status))
        return dict(rows.fetchall())


@pytest.mark.slow
def test_a_job_posted_to_the_ingress_runs_on_one_of_two_worker_replicas(deployed):
    from server import ray_app

    client, url = deployed(workers=2)
    workers = ray_app.worker_ids()
    assert len(workers) == 2, workers
    response = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 3, "size": "32x32",
                                               "num_frames": 9, "num_inference_steps": 2})
    assert response.status_code == 200, response.text
    video_id = response.json()["id"]
    assert wait_for(client, video_id, timeout=600)["status"] == "completed"
    content = client.get(f"/v1/videos/{video_id}/content")
    assert content.status_code == 200 and len(content.content) > 0
    assert _workers_of(url)[video_id] in workers


def test_nrg_ray_forwards_the_serve_flags_and_resolves_the_replica_counts(monkeypatch):
    from server.cli import build_parser
    from server.cli.ray import app_args
    from server.ray_app import server_config_of

    monkeypatch.setenv("NRG_MAX_BATCH", "3")  # an NRG_* default is resolved where `nrg ray` runs
    parser = build_parser()
    args = parser.parse_args(["ray", "--store", "postgresql://u@db:5432/nrg", "--model", "a=/m/a", "--model",
                              "b=/m/b", "--reward", "a=/r", "--port", "9000", "--api-key", "k", "--admin-key", "op", "--min-workers",
                              "1", "--max-workers", "6", "--workers", "2", "--worker-gpus", "1"])
    spec = app_args(args)
    assert (spec["workers"], spec["min_workers"], spec["max_workers"], spec["worker_gpus"]) == (2, 1, 6, 1.0)
    assert "--port" not in spec["flags"] and "--role" not in spec["flags"]
    config = server_config_of(spec["flags"], "worker", "ray-x")
    assert config.models == {"a": Path("/m/a"), "b": Path("/m/b")}
    assert (config.role, config.worker_id, config.max_batch, config.api_keys) == ("worker", "ray-x", 3, ("k",))
    assert config.store_url == "postgresql://u@db:5432/nrg"
    assert config.admin_key == "op"


def test_nrg_ray_without_ray_names_the_extra(monkeypatch, capsys):
    import sys

    from server.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exited:
        main(["ray", "--store", "postgresql://postgres@127.0.0.1:1/none", "--model", "x=/nowhere",
              "--allow-empty-store"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nrg: error: Ray Serve is not installed: pip install 'nrg-serve[ray]'"), err


def test_the_package_imports_without_ray():
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError
            "import server.app, server.cli, server.cli.ray, server.ray_app\n"
            "from server.cli import build_parser; build_parser().parse_args(['ray', '--workers', '2'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

def test_the_kuberay_example_is_a_valid_serve_config_of_both_builders():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from server import ray_app

    root = Path(__file__).resolve().parents[2]
    manifest = yaml.safe_load((root / "docs" / "kuberay-rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    apps = {app.name: app for app in config.applications}
    assert apps[ray_app.WORKER_APP].import_path == "server.ray_app:worker_app"
    assert apps[ray_app.WORKER_APP].route_prefix is None and apps[ray_app.API_APP].route_prefix == "/"
    assert apps[ray_app.API_APP].import_path == "server.ray_app:api_app"
    for app in apps.values():  # the builders accept the args (no Ray cluster needed to build)
        module, name = app.import_path.split(":")
        getattr(ray_app, name)(app.args)
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == __import__("ray").__version__
