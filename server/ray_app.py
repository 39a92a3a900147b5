"""Ray Serve deployment of a scaled-out server (``nrg ray``, or ``serve run`` / KubeRay ``RayService``).

Two Ray Serve applications over one shared PostgreSQL job store (``--store postgresql://...``) and one
shared ``--data-dir``:

* ``nrg`` (route ``/``): the ingress deployment, ``NrgApi``: the FastAPI app of ``nrg serve --role api``
  (HTTP only, no engine), behind Ray Serve's HTTP proxy;
* ``nrg-workers`` (no HTTP route): ``NrgWorker`` replicas, each the engine of ``nrg serve --role worker``
  (``ray_actor_options={"num_gpus": 1}`` by default: one replica per GPU). Workers claim jobs from the
  store exactly as ``nrg worker`` processes do; Ray only places, restarts and scales the processes.
  No job is routed through Ray.

Autoscaling follows the store's queue, not Ray's request counts (a worker receives no requests): each
worker replica reports ``queued`` (the store's queued jobs of its models) and ``held`` (the jobs it
runs) through ``record_autoscaling_stats``, and :func:`queue_depth_policy`, a Ray Serve custom
autoscaling policy, asks for ``ceil((queued + held) / max_batch)`` replicas within
``[min_workers, max_workers]``. The metrics come from the replicas, so the floor is one replica.

Ray is an optional extra (``pip install 'nrg-serve[ray]'``); this module imports it only inside the
functions that need it, so the rest of the package (and ``nrg serve``) works without it.

The builders :func:`api_app` and :func:`worker_app` take Ray Serve's application ``args`` (a dict):

``flags``
    the ``nrg serve`` flags every process shares, as a list of strings (``--store``, ``--model``,
    ``--reward``, ``--checkpoint``, ``--data-dir``, limits ...); ``--role``, ``--port`` and ``--worker-id``
    are set per deployment;
``workers`` / ``min_workers`` / ``max_workers``
    worker replicas: a fixed count, or autoscaling bounds (when ``max_workers`` > ``min_workers``);
``worker_gpus`` / ``worker_cpus``
    each worker replica's ``num_gpus`` (default 1; 0 runs it on CPU) and ``num_cpus`` (default 1);
``api_replicas`` / ``api_cpus``
    ingress replicas (default 1) and their ``num_cpus`` (default 0.5).
"""

from __future__ import annotations

import math
from typing import Any

from server.config import ServerConfig

RAY_MISSING = "Ray Serve is not installed: pip install 'nrg-serve[ray]'"
API_APP, WORKER_APP = "nrg", "nrg-workers"
#: Seconds between the workers' queue reports and the autoscaler's decisions.
AUTOSCALE_INTERVAL_S = 2.0


def require_ray():
    """``(ray, ray.serve)``, or a one-line ValueError naming the extra."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ValueError(f"{RAY_MISSING} ({exc})") from None
    return ray, serve


def server_config_of(flags: list[str], role: str, worker_id: str | None = None):
    """The :class:`server.config.ServerConfig` of ``nrg serve`` flags, as ``role``."""
    import argparse
    from dataclasses import replace

    from server.cli.serve import add_serve_flags, server_config

    parser = argparse.ArgumentParser(prog="nrg ray")
    add_serve_flags(parser, default_role=role)
    config = server_config(parser.parse_args(list(flags)))
    config = replace(config, role=role, worker_id=worker_id)
    if not (config.store_url or "").startswith(("postgresql://", "postgres://")):
        raise ValueError("nrg ray needs a store the processes share: --store postgresql://...")
    return config


def _build(flags: list[str], role: str, worker_id: str | None):
    from server import log_format
    from server.app import create_app
    from server.config import load_models

    log_format.configure("text")
    config = server_config_of(flags, role, worker_id)
    return config, create_app(config, load_models(config))


def _replica_name() -> str:
    from ray import serve

    context = serve.get_replica_context()
    tag = getattr(context, "replica_tag", None) or context.replica_id.unique_id
    return f"ray-{tag}"


def queue_depth_policy(ctx) -> tuple[int, dict[str, Any]]:
    """Ray Serve custom autoscaling policy: enough worker replicas for the store's queue.

    Reads the workers' ``record_autoscaling_stats`` (``queued``: the same store-wide count on every
    replica, so the largest; ``held``: each replica's own jobs, summed; ``capacity``: ``--max-batch``),
    bounded by the deployment's min/max replicas."""
    metrics = ctx.aggregated_metrics or {}
    queued = max(metrics.get("queued", {}).values(), default=0.0)
    held = sum(metrics.get("held", {}).values())
    capacity = max(metrics.get("capacity", {}).values(), default=1.0) or 1.0
    wanted = math.ceil((queued + held) / capacity)
    low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    if not metrics:  # no replica has reported yet (starting): keep what is asked for
        wanted = ctx.target_num_replicas
    return max(low, min(high, int(wanted))), dict(ctx.policy_state or {})


def _deployments():
    """The two deployment classes (defined here so that Ray is imported only when deploying)."""
    _, serve = require_ray()

    @serve.ingress()
    class NrgApi:
        """``nrg serve --role api``: the HTTP API over the shared store."""

        def __init__(self, flags: list[str]) -> None:
            self.flags = list(flags)

        def __serve_build_asgi_app__(self):
            self.config, self.nrg = _build(self.flags, "api", None)
            return self.nrg

        def check_health(self) -> None:
            problem = self.nrg.state.runtime.store.problem
            if problem:
                raise RuntimeError(f"job store: {problem}")

    @serve.ingress()
    class NrgWorker:
        """``nrg serve --role worker``: the engine, claiming jobs from the shared store."""

        def __init__(self, flags: list[str]) -> None:
            self.flags = list(flags)

        def __serve_build_asgi_app__(self):
            self.config, self.nrg = _build(self.flags, "worker", _replica_name())
            return self.nrg

        def check_health(self) -> None:
            runtime = self.nrg.state.runtime
            if runtime.engine.failure:
                raise RuntimeError(f"worker {runtime.worker_id} failed: {runtime.engine.failure}")

        def worker_id(self) -> str:
            return self.nrg.state.runtime.worker_id

        def record_autoscaling_stats(self) -> dict[str, float]:
            runtime = self.nrg.state.runtime
            engine = runtime.engine
            return {"queued": float(runtime.store.count_queued(engine.models)),
                    "held": float(len(engine.held_job_ids())), "capacity": float(self.config.max_batch)}

    return NrgApi, NrgWorker


def _worker_options(args: dict[str, Any], shutdown_grace_s: float = ServerConfig.shutdown_grace_s) -> dict[str, Any]:
    """The worker deployment's options; a replica being stopped gets ``--shutdown-grace`` (and 10 s to
    spare) for its running batch before Ray kills it."""
    workers = int(args.get("workers", 1))
    low = int(args.get("min_workers", workers))
    high = int(args.get("max_workers", max(workers, low)))
    if not 1 <= low <= high:
        raise ValueError(f"worker replicas need 1 <= min_workers <= max_workers; got {low}, {high}")
    actor = {"num_gpus": float(args.get("worker_gpus", 1)), "num_cpus": float(args.get("worker_cpus", 1))}
    options: dict[str, Any] = {"name": "NrgWorker", "ray_actor_options": actor,
                               "health_check_period_s": 5,
                               "graceful_shutdown_timeout_s": shutdown_grace_s + 10}
    if high > low:
        options["autoscaling_config"] = {
            "min_replicas": low, "max_replicas": high, "initial_replicas": max(low, min(high, workers)),
            "metrics_interval_s": AUTOSCALE_INTERVAL_S, "look_back_period_s": 2 * AUTOSCALE_INTERVAL_S,
            "upscale_delay_s": AUTOSCALE_INTERVAL_S, "downscale_delay_s": 60,
            "policy": {"policy_function": "server.ray_app:queue_depth_policy"},
        }
    else:
        options["num_replicas"] = low
    return options


def worker_app(args: dict[str, Any]):
    """Ray Serve application builder: the worker replicas (see the module docstring for ``args``)."""
    _, worker = _deployments()
    flags = list(args["flags"])
    config = server_config_of(flags, "worker")  # a bad flag fails the deploy, not every replica
    _, serve = require_ray()
    return serve.deployment(worker).options(**_worker_options(args, config.shutdown_grace_s)).bind(flags)


def api_app(args: dict[str, Any]):
    """Ray Serve application builder: the HTTP ingress (see the module docstring for ``args``)."""
    api, _ = _deployments()
    flags = list(args["flags"])
    server_config_of(flags, "api")
    _, serve = require_ray()
    return serve.deployment(api).options(
        name="NrgApi", num_replicas=int(args.get("api_replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("api_cpus", 0.5))}, health_check_period_s=5,
    ).bind(flags)


def deploy(args: dict[str, Any], host: str = ServerConfig.host, port: int = ServerConfig.port) -> None:
    """Start Serve on the connected Ray cluster (``ray.init`` first) and deploy both applications;
    returns once they run."""
    _, serve = require_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(worker_app(args), name=WORKER_APP, route_prefix=None, blocking=False)
    serve.run(api_app(args), name=API_APP, route_prefix="/", blocking=False)


def worker_ids() -> set[str]:
    """The worker ids (``--worker-id``) of the worker replicas alive now, from their Ray actor names."""
    ray, _ = require_ray()
    prefix = f"SERVE_REPLICA::{WORKER_APP}#NrgWorker#"
    return {f"ray-{actor['name'][len(prefix):]}" for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith(prefix)}
