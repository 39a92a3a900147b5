"""``nrg ray``: deploy a scaled-out server on Ray Serve (:mod:`server.ray_app`): the HTTP API as the
ingress deployment and one worker replica per GPU, over a shared ``--store postgresql://...``.

Takes the flags of ``nrg serve`` (forwarded to every replica, ``NRG_*`` defaults resolved here) plus
the Ray ones below. Needs the ``ray`` extra: ``pip install 'nrg-serve[ray]'``.
"""

from __future__ import annotations

import argparse

#: ``nrg serve`` flags that are set per deployment, not forwarded.
_NOT_FORWARDED = {"help", "role", "worker_id", "port"}


def add_parser(sub) -> None:
    from server.cli.serve import add_serve_flags

    parser = sub.add_parser(
        "ray", help="deploy the API and the workers on Ray Serve (needs the ray extra)",
        description="Deploys the HTTP API (`nrg serve --role api`) as a Ray Serve ingress on --host/--port and "
                    "--workers worker replicas (`nrg serve --role worker`, num_gpus=--worker-gpus each) over one "
                    "shared --store postgresql://... and --data-dir. Every `nrg serve` flag is forwarded to the "
                    "replicas. With --max-workers above --min-workers the worker count follows the store's queue "
                    "depth. Needs `pip install 'nrg-serve[ray]'`; see docs/server.md, Ray Serve.")
    add_serve_flags(parser, default_role="api")
    ray = parser.add_argument_group("Ray")
    ray.add_argument("--workers", type=int, default=1, help="worker replicas (the initial count when autoscaling; "
                                                            "default 1)")
    ray.add_argument("--min-workers", type=int, default=None, help="autoscaling floor (default --workers; >= 1)")
    ray.add_argument("--max-workers", type=int, default=None, help="autoscaling ceiling (default --workers: no "
                                                                   "autoscaling)")
    ray.add_argument("--worker-gpus", type=float, default=1.0,
                     help="GPUs per worker replica (default 1: one replica per GPU; 0 runs the workers on CPU)")
    ray.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs per worker replica (default 1)")
    ray.add_argument("--api-replicas", type=int, default=1, help="ingress replicas (default 1)")
    ray.add_argument("--api-cpus", type=float, default=0.5, help="CPUs per ingress replica (default 0.5)")
    ray.add_argument("--address", default=None,
                     help="Ray cluster to deploy on (default: $RAY_ADDRESS, else a new local Ray instance)")


def forwarded_flags(args: argparse.Namespace) -> list[str]:
    """The ``nrg serve`` flags of parsed ``nrg ray`` arguments, as the replicas parse them."""
    from server.cli.serve import add_serve_flags

    serve = argparse.ArgumentParser(add_help=False)
    add_serve_flags(serve, default_role="api")
    flags: list[str] = []
    for action in serve._actions:
        if action.dest in _NOT_FORWARDED:
            continue
        value, option = getattr(args, action.dest), action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            flags += [option] if value else []
        elif isinstance(value, list):
            for item in value:
                flags += [option, str(item)]
        elif value is not None:
            flags += [option, str(value)]
    return flags


def app_args(args: argparse.Namespace) -> dict:
    """Ray Serve application ``args`` for :func:`server.ray_app.api_app` / :func:`~server.ray_app.worker_app`."""
    workers = args.workers
    low = args.min_workers if args.min_workers is not None else workers
    high = args.max_workers if args.max_workers is not None else max(workers, low)
    return {"flags": forwarded_flags(args), "workers": workers, "min_workers": low, "max_workers": high,
            "worker_gpus": args.worker_gpus, "worker_cpus": args.worker_cpus, "api_replicas": args.api_replicas,
            "api_cpus": args.api_cpus}


def run(args: argparse.Namespace) -> int:
    import threading

    from server import ray_app
    from server.store import open_store

    ray, serve = ray_app.require_ray()  # the missing extra first, in one line
    if args.role != "api":
        raise ValueError("nrg ray sets --role per deployment (api for the ingress, worker for the replicas)")
    spec = app_args(args)
    ray_app._worker_options(spec)  # bad replica counts fail here
    config = ray_app.server_config_of(spec["flags"], "api")  # needs --store postgresql://...
    open_store(config.store_url, config.data_dir).close()  # checks the URL, connects, migrates: before Ray
    ray.init(address=args.address)
    try:
        ray_app.deploy(spec, host=args.host, port=args.port)
        url = f"http://{args.host}:{args.port}"
        scaling = (f"{spec['min_workers']}..{spec['max_workers']} by queue depth"
                   if spec["max_workers"] > spec["min_workers"] else str(spec["workers"]))
        print(f"nrg-serve on Ray Serve at {url}: API ingress x{spec['api_replicas']}, workers {scaling} "
              f"({spec['worker_gpus']:g} GPU each); Ctrl-C stops and removes the deployment", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
