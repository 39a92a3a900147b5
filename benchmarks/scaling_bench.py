"""Throughput of 1, 2, 4 ... worker processes over one PostgreSQL store on one machine: scaling efficiency.

::

    python -m benchmarks.scaling_bench --workers 1,2,4 --rounds 3 --num-prompts 16 --steps 10

It starts a throwaway PostgreSQL (:mod:`tools.local_postgres`), one API process (``nrg serve --role
api``, one thread) and, for each worker count N of ``--workers``, N worker processes (``nrg worker
--threads T``, T = max(1, cores // N) unless ``--threads`` is given, so that the workers share the cores
instead of fighting for them), every process a subprocess on the same model (``--model``, default the
embedded demo model) and one shared ``--data-dir``. Each configuration is driven with the same
closed-loop ``nrg-bench`` workload: ``--num-prompts`` unguided requests of ``--steps`` steps, at most
``--max-concurrency`` in flight (default 2 * N * max_batch: enough to keep every worker's batch full),
after ``N * max_batch`` warm-up requests. The workers of a configuration are started for its phase and
stopped after it; the API process lives throughout.

``--rounds`` rounds run every configuration, the order of N alternating between rounds (so drift in the
machine's load falls on all of them). Per round: the throughput of each N, its speedup over N = 1 of the
same round and its scaling efficiency (speedup / N); the summary is the median of each over rounds.

Prints a markdown section for docs/benchmarks.md (``--markdown PATH`` writes it too); ``--output-file``
writes everything as JSON. A load average above the core count is reported: the figures then say more
about the other work than about the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import publish
from tools.local_postgres import free_port, local_postgres


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="diffusers directory (default: the embedded demo model)")
    p.add_argument("--workers", default="1,2,4", help="worker counts to compare, comma-separated (default 1,2,4)")
    p.add_argument("--threads", type=int, default=None,
                   help="--threads of every worker (default max(1, cores // N))")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--num-prompts", type=int, default=16, help="measured requests per phase (default 16)")
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="requests in flight (default 2 * N * max_batch)")
    p.add_argument("--steps", type=int, default=10, help="num_inference_steps of every request (default 10)")
    p.add_argument("--size", default=None, metavar="WxH", help="size of every request (default: the model's)")
    p.add_argument("--num-frames", type=int, default=None, help="frames of every request (default: the model's)")
    p.add_argument("--max-batch", type=int, default=4, help="--max-batch of the workers (default 4)")
    p.add_argument("--batch-wait-ms", type=float, default=50.0, help="--batch-wait-ms of the workers (default 50)")
    p.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1; the same for every phase)")
    p.add_argument("--device", default="cpu", help="--device of the workers (default cpu)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a process may take to be ready (300)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown section here")
    p.add_argument("--output-file", type=Path, default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    try:
        args.counts = [int(v) for v in args.workers.split(",") if v.strip()]
    except ValueError:
        p.error(f"--workers must be integers separated by commas; got {args.workers!r}")
    if not args.counts or min(args.counts) < 1 or len(set(args.counts)) != len(args.counts):
        p.error(f"--workers must be distinct integers >= 1; got {args.workers!r}")
    if 1 not in args.counts:
        p.error("--workers must include 1: speedups are against one worker")
    for name, value in (("--rounds", args.rounds), ("--num-prompts", args.num_prompts), ("--steps", args.steps),
                        ("--max-batch", args.max_batch), ("--threads", args.threads or 1),
                        ("--max-concurrency", args.max_concurrency or 1)):
        if value < 1:
            p.error(f"{name} must be >= 1; got {value}")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


class Processes:
    """``python -m server.cli serve ...`` subprocesses over one store and data dir, each logging to a file."""

    def __init__(self, store: str, root: Path, args: argparse.Namespace):
        self.root, self.args = root, args
        model = ["--model", str(args.model)] if args.model is not None else []
        self.base = [sys.executable, "-m", "server.cli", "serve", *model, "--store", store,
                     "--data-dir", str(root / "data"), "--max-queue", "1000", "--max-steps", str(max(100, args.steps))]
        self.procs: dict[str, tuple[subprocess.Popen, Path, str]] = {}

    def start(self, name: str, threads: int, *flags: str) -> str:
        port = free_port()
        log = self.root / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(log, "ab") as sink:  # a file, never an unread pipe that would block the server
            proc = subprocess.Popen([*self.base, "--port", str(port), "--threads", str(threads), *flags],
                                    stdout=sink, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        self.procs[name] = (proc, log, url)
        return url

    def wait_ready(self, names: Sequence[str]) -> None:
        deadline = time.monotonic() + self.args.start_timeout
        for name in names:
            proc, log, url = self.procs[name]
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return f"--- {name}\n{self.procs[name][1].read_text()[-chars:]}"

    def stop(self, names: Sequence[str] | None = None) -> None:
        names = list(self.procs) if names is None else list(names)
        for name in names:
            proc = self.procs[name][0]
            if proc.poll() is None:
                proc.terminate()
        for name in names:
            proc = self.procs.pop(name)[0]
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def threads_for(args: argparse.Namespace, n: int, cores: int) -> int:
    return args.threads or max(1, cores // n)


def _bench(url: str, args: argparse.Namespace, n: int) -> dict[str, Any]:
    from nrg_client.bench import BenchConfig, run_async

    concurrency = args.max_concurrency or 2 * n * args.max_batch
    config = BenchConfig(base_url=url, num_prompts=args.num_prompts, max_concurrency=concurrency,
                         guided_fraction=0.0, steps=args.steps, size=args.size,
                         num_frames=args.num_frames, warmup_requests=n * args.max_batch, seed=args.seed,
                         guidance_probes=0, progress=False)
    result = asyncio.run(run_async(config))
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} requests failed: {result['errors']}")
    latency = result["latency_s"]
    return {"throughput": result["request_throughput"], "duration_s": result["duration_s"],
            "p50": latency["p50"], "p90": latency["p90"], "batch": result["batch_size"]["jobs"]["mean"],
            "max_concurrency": concurrency}


def run_scaling(args: argparse.Namespace, cores: int, log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nrg-scaling-") as tmp, local_postgres() as pg:
        root = Path(tmp)
        procs = Processes(pg.create_database("scaling"), root, args)
        try:
            api = procs.start("api", 1, "--role", "api")
            waiting = ["api"]  # the API loads alongside the first phase's workers
            rounds = []
            for r in range(args.rounds):
                order = args.counts if r % 2 == 0 else args.counts[::-1]
                phases: dict[int, dict[str, Any]] = {}
                for n in order:
                    threads = threads_for(args, n, cores)
                    names = [f"r{r + 1}-n{n}-w{i + 1}" for i in range(n)]
                    log(f"round {r + 1}/{args.rounds}: {n} worker(s), {threads} thread(s) each")
                    started = time.monotonic()
                    for name in names:
                        procs.start(name, threads, "--role", "worker", "--worker-id", name,
                                    "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms),
                                    "--device", args.device)
                    procs.wait_ready([*waiting, *names])
                    waiting = []
                    log(f"  ready after {time.monotonic() - started:.1f} s")
                    try:
                        phases[n] = {"threads": threads, **_bench(api, args, n)}
                    except Exception as exc:
                        raise RuntimeError(f"{exc}; worker logs:\n" + "\n".join(
                            procs.log_tail(name) for name in names)) from exc
                    procs.stop(names)
                    log(f"  {phases[n]['throughput']:.3f} req/s")
                base = phases[1]["throughput"]
                for n, phase in phases.items():
                    phase["speedup"] = phase["throughput"] / base
                    phase["efficiency"] = phase["speedup"] / n
                rounds.append({"round": r + 1, "order": list(order), "phases": {str(n): phases[n] for n in args.counts}})
        finally:
            procs.stop()
    summary = {}
    for n in args.counts:
        per = [r["phases"][str(n)] for r in rounds]
        summary[str(n)] = {key: statistics.median(p[key] for p in per) for key in ("throughput", "speedup", "efficiency")}
        summary[str(n)]["threads"] = per[0]["threads"]
    return {"rounds": rounds, "median": summary}


def markdown(result: dict[str, Any]) -> str:
    s = result["scaling"]
    cfg = result["config"]
    lines = [f"Command: `{result['command']}`  ",
             f"Device: {result['device']}; {result['cores']} cores; load average at the start {result['load_start']}, "
             f"at the end {result['load_end']}; {result['date']}.", "",
             f"Model {cfg['model']}; {cfg['num_prompts']} unguided requests of {cfg['steps']} steps per phase, closed "
             f"loop; workers at --max-batch {cfg['max_batch']}; one API process.", "",
             "| round | workers | threads each | throughput (req/s) | p50 (s) | batch | speedup vs 1 | efficiency |",
             "|---|---|---|---|---|---|---|---|"]
    for r in s["rounds"]:
        for n, ph in r["phases"].items():
            batch = f"{ph['batch']:.2f}" if ph["batch"] is not None else "-"
            lines.append(f"| {r['round']} | {n} | {ph['threads']} | {ph['throughput']:.3f} | {ph['p50']:.2f} | {batch} | "
                         f"{ph['speedup']:.3f} | {ph['efficiency']:.3f} |")
    lines += ["", "Median over rounds:", "",
              "| workers | threads each | throughput (req/s) | speedup vs 1 | efficiency (speedup / N) |",
              "|---|---|---|---|---|"]
    for n, m in s["median"].items():
        lines.append(f"| {n} | {m['threads']} | {m['throughput']:.3f} | {m['speedup']:.3f} | {m['efficiency']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(text: str) -> None:
        print(f"[scaling_bench] {text}", file=sys.stderr, flush=True)

    cores = _cores()
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.scaling_bench", *args.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()})" if args.device == "cpu" else args.device,
        "cores": cores, "load_start": list(os.getloadavg()),
        "config": {"model": str(args.model) if args.model else "nrg-demo (embedded)", "workers": args.counts,
                   "num_prompts": args.num_prompts, "steps": args.steps, "size": args.size,
                   "num_frames": args.num_frames, "max_batch": args.max_batch,
                   "max_concurrency": args.max_concurrency, "threads": args.threads, "rounds": args.rounds},
    }
    result["scaling"] = run_scaling(args, cores, log)
    result["load_end"] = list(os.getloadavg())
    publish(result, markdown(result), args.markdown, args.output_file, cores, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
