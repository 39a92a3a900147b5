"""Continuous against static batching under the same open-loop load, and the cost of guiding half a batch.

::

    python -m benchmarks.batching_bench --rounds 3 --num-prompts 24 --steps-mix 10,20,30 --load 0.9

1. **Serving.** Two servers run in this process on the same model, one ``--batching static`` and one
   ``--batching continuous`` (each loads it once). A capacity probe sends ``2 * max_batch`` requests at
   once to the static server; the offered load is ``--load`` times its throughput. Each round then
   drives both servers, one after the other (the order alternates between rounds, so drift in the
   machine's load falls on both sides), with the same ``nrg-bench`` workload: Poisson arrivals at that
   rate, step counts drawn from ``--steps-mix``, half the requests guided with random weights. It reports
   throughput, p50/p90/p99 latency, mean queue wait and the achieved batch size (``nrg_batch_size``:
   samples per denoising step), and per round the continuous/static ratios of p50 latency and
   throughput; the summary is their median over rounds. ``--step-slowdown F`` adds a third server,
   ``bounded``: continuous with ``--max-step-slowdown F`` (joins bounded by the learnt step time), in
   the same rounds (the order rotates) and with the same ratios against static.
2. **Step scaling.** One unguided step's time at batch sizes 1, 2 and ``max_batch``: how much sharing a
   step costs each sample, which bounds what continuous batching can gain.
3. **Guidance cost.** On the library (``guidance.batch_state``), a batch of ``max_batch`` samples with
   none guided, half guided (the reward model's defaults) and all guided, repeated ``--repeats`` times
   interleaved; the time per clip of each against none guided.

Prints a markdown section for docs/benchmarks.md (``--markdown PATH`` writes it too) and ``--output-file``
writes everything as JSON. A load average above the core count is reported: the figures then say more
about the other work than about the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.report import publish
from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_STEPS
from tools.in_process import serve_in_process

MODES = ("static", "continuous")
#: The third server of ``--step-slowdown``: continuous batching with joins bounded by the learnt step time.
BOUNDED = "bounded"


def _modes(args: argparse.Namespace) -> tuple[str, ...]:
    return MODES + ((BOUNDED,) if args.step_slowdown else ())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batching_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="diffusers directory (default: embedded demo)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--num-prompts", type=int, default=24, help="requests per phase (default 24)")
    p.add_argument("--steps-mix", default="10,20,30", help="step counts drawn per request (default 10,20,30)")
    p.add_argument("--load", type=float, default=0.9, help="offered load as a fraction of static capacity (0.9)")
    p.add_argument("--max-batch", type=int, default=4, help="--max-batch of both servers (default 4)")
    p.add_argument("--batch-wait-ms", type=float, default=50.0, help="--batch-wait-ms of both servers (default 50)")
    p.add_argument("--step-slowdown", type=float, default=0.0, metavar="F",
                   help="also serve continuous with --max-step-slowdown F, in the same rounds (default 0: not run)")
    p.add_argument("--guided-fraction", type=float, default=0.5, help="guided share of the workload (0.5)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions of the guidance-cost batches (default 5)")
    p.add_argument("--guidance-steps", type=int, default=DEFAULT_STEPS,
                   help=f"steps of the guidance-cost batches (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=1, help="seed of the first round's workload (default 1)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", help="weights dtype (default float32)")
    p.add_argument("--skip", choices=("serving", "guidance", "scaling"), action="append", default=[],
                   help="leave a part out (repeatable)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown section here")
    p.add_argument("--output-file", type=Path, default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    try:
        args.steps = [int(v) for v in args.steps_mix.split(",") if v.strip()]
    except ValueError:
        p.error(f"--steps-mix must be integers separated by commas; got {args.steps_mix!r}")
    for name, value, low in (("--rounds", args.rounds, 1), ("--num-prompts", args.num_prompts, 1),
                             ("--max-batch", args.max_batch, 2), ("--repeats", args.repeats, 1)):
        if value < low:
            p.error(f"{name} must be >= {low}; got {value}")
    if not 0 < args.load:
        p.error(f"--load must be > 0; got {args.load}")
    if args.step_slowdown and not args.step_slowdown >= 1:
        p.error(f"--step-slowdown must be >= 1 (or 0: not run); got {args.step_slowdown}")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def _bench(url: str, args: argparse.Namespace, *, num: int, rate: float, seed: int) -> dict[str, Any]:
    from nrg_client.bench import BenchConfig, run_async

    config = BenchConfig(base_url=url, num_prompts=num, request_rate=rate, weights="random",
                         guided_fraction=args.guided_fraction, steps_mix=args.steps, warmup_requests=0,
                         seed=seed, guidance_probes=0, progress=False)
    result = asyncio.run(run_async(config))
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} requests failed: {result['errors']}")
    return result


def _phase(result: dict[str, Any]) -> dict[str, Any]:
    latency, queue = result["latency_s"], result["queue_time_s"]
    return {"throughput": result["request_throughput"], "p50": latency["p50"], "p90": latency["p90"],
            "p99": latency["p99"], "queue_mean": queue["mean"], "batch": result["batch_size"]["metrics"]["mean"]}


def run_serving(args: argparse.Namespace, log) -> dict[str, Any]:
    modes = _modes(args)
    with tempfile.TemporaryDirectory(prefix="nrg-batching-") as tmp, contextlib.ExitStack() as servers:
        urls = {}
        for mode in modes:
            urls[mode], _ = servers.enter_context(serve_in_process(
                args.model, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=1000,
                device=args.device, dtype=args.dtype, data_dir=Path(tmp) / mode,
                batching="static" if mode == "static" else "continuous",
                max_step_slowdown=args.step_slowdown if mode == BOUNDED else None))
        for mode, url in urls.items():  # warm every server (first calls allocate and compile)
            _bench(url, args, num=args.max_batch, rate=float("inf"), seed=10_000)
        probe = _bench(urls["static"], args, num=2 * args.max_batch, rate=float("inf"), seed=20_000)
        capacity = probe["request_throughput"]
        rate = args.load * capacity
        log(f"static capacity {capacity:.3f} req/s; offered load {rate:.3f} req/s")
        rounds = []
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            phases = {}
            for mode in order:
                log(f"round {r + 1}/{args.rounds}: {mode}")
                phases[mode] = _phase(_bench(urls[mode], args, num=args.num_prompts, rate=rate, seed=args.seed + r))
            s = phases["static"]
            ratios = {mode: {"p50": phases[mode]["p50"] / s["p50"],
                             "throughput": phases[mode]["throughput"] / s["throughput"]} for mode in modes[1:]}
            rounds.append({"round": r + 1, "order": list(order), **phases, "ratios": ratios,
                           "p50_ratio": ratios["continuous"]["p50"], "throughput_ratio": ratios["continuous"]["throughput"]})
    medians = {mode: {what: statistics.median(r["ratios"][mode][what] for r in rounds) for what in ("p50", "throughput")}
               for mode in modes[1:]}
    return {"capacity_req_s": capacity, "offered_req_s": rate, "rounds": rounds, "modes": list(modes),
            "step_slowdown": args.step_slowdown or None, "median_ratios": medians,
            "median_p50_ratio": medians["continuous"]["p50"],
            "median_throughput_ratio": medians["continuous"]["throughput"]}


def run_guidance_cost(args: argparse.Namespace, log) -> dict[str, Any]:
    import torch

    from guidance.batch_state import BatchState
    from guidance.nrg import defaults_for
    from guidance.sample_types import SampleSpec

    hosted = _hosted(args)
    if hosted.reward is None:
        raise ValueError("the guidance-cost part needs a model with a reward model")
    defaults = defaults_for(hosted.reward)
    objectives = hosted.reward.objectives
    batch = args.max_batch

    def specs(guided: int) -> list[SampleSpec]:
        return [SampleSpec(f"a red circle moving left {i}", seed=i, guidance=defaults.complete(
            {objectives[i % len(objectives)]: 1.0}) if i < guided else None) for i in range(batch)]

    def one(guided: int) -> float:
        state = BatchState(hosted.family, hosted.default_shape, hosted.reward)
        start = time.perf_counter()
        state.add(specs(guided), args.guidance_steps, range(batch))
        while not state.finished():
            state.step()
        state.pop_finished()
        if hosted.family.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / batch

    kinds = {"none": 0, "half": batch // 2, "all": batch}
    for guided in kinds.values():
        one(guided)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for rep in range(args.repeats):
        log(f"guidance cost: repeat {rep + 1}/{args.repeats}")
        for name, guided in kinds.items():
            times[name].append(one(guided))
    per_clip = {name: statistics.median(values) for name, values in times.items()}
    return {"batch": batch, "steps": args.guidance_steps, "shape": vars(hosted.default_shape),
            "defaults": defaults.to_json(), "per_clip_s": per_clip, "times_s": times,
            "half_ratio": per_clip["half"] / per_clip["none"], "all_ratio": per_clip["all"] / per_clip["none"]}


def run_step_scaling(args: argparse.Namespace, log) -> dict[str, Any]:
    """One unguided step's time at batch sizes 1, 2, ... ``max_batch``: what sharing a step costs."""
    import torch

    from guidance.batch_state import BatchState
    from guidance.sample_types import SampleSpec

    hosted = _hosted(args)
    sizes = sorted({1, 2, args.max_batch} | ({4} if args.max_batch >= 4 else set()))
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for rep in range(args.repeats):
        log(f"step scaling: repeat {rep + 1}/{args.repeats}")
        for b in sizes:
            state = BatchState(hosted.family, hosted.default_shape, hosted.reward)
            state.add([SampleSpec(f"a red circle {i}", seed=i) for i in range(b)], 10, range(b))
            state.step()  # warm
            start = time.perf_counter()
            for _ in range(5):
                state.step()
            if hosted.family.device.type == "cuda":
                torch.cuda.synchronize()
            times[b].append((time.perf_counter() - start) / 5)
    step = {b: statistics.median(v) for b, v in times.items()}
    return {"step_s": step, "per_sample_gain": {b: step[1] * b / step[b] for b in sizes}}


def _hosted(args: argparse.Namespace):
    from server.config import ServerConfig, load_models

    embedded = Path(args.model).resolve() == Path(DEFAULT_MODEL_DIR).resolve()
    config = ServerConfig(models={} if embedded else {Path(args.model).name: Path(args.model)}, device=args.device,
                          dtype=args.dtype)
    return next(iter(load_models(config).values()))


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Command: `{result['command']}`  ", f"Device: {result['device']}; load average at the start "
             f"{result['load_start']}, at the end {result['load_end']} ({result['cores']} cores); {result['date']}.", ""]
    serving = result.get("serving")
    if serving:
        modes = serving["modes"]
        bounded = f" `{BOUNDED}` is continuous with `--max-step-slowdown {serving['step_slowdown']:g}`." \
            if BOUNDED in modes else ""
        lines += [f"Static capacity {serving['capacity_req_s']:.3f} req/s; offered Poisson load "
                  f"{serving['offered_req_s']:.3f} req/s.{bounded}", "",
                  "| round | mode | throughput (req/s) | p50 (s) | p90 (s) | p99 (s) | queue mean (s) | batch |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in serving["rounds"]:
            for mode in modes:
                ph = r[mode]
                lines.append(f"| {r['round']} | {mode} | {ph['throughput']:.3f} | {ph['p50']:.2f} | {ph['p90']:.2f} | "
                             f"{ph['p99']:.2f} | {ph['queue_mean']:.2f} | {ph['batch']:.2f} |")
        header = " | ".join(f"p50 {m}/static | throughput {m}/static" for m in modes[1:])
        lines += ["", f"| round | {header} |", "|---|" + "---|---|" * len(modes[1:])]
        for r in serving["rounds"]:
            cells = " | ".join(f"{r['ratios'][m]['p50']:.3f} | {r['ratios'][m]['throughput']:.3f}" for m in modes[1:])
            lines.append(f"| {r['round']} | {cells} |")
        cells = " | ".join(f"{serving['median_ratios'][m]['p50']:.3f} | {serving['median_ratios'][m]['throughput']:.3f}"
                           for m in modes[1:])
        lines += [f"| median | {cells} |", ""]
    scaling = result.get("scaling")
    if scaling:
        lines += ["One unguided step by batch size (median of the repeats):", "",
                  "| batch | step (ms) | per-sample throughput vs batch 1 |", "|---|---|---|"]
        lines += [f"| {b} | {1000 * t:.1f} | {scaling['per_sample_gain'][b]:.2f} |" for b, t in scaling["step_s"].items()]
        lines.append("")
    cost = result.get("guidance")
    if cost:
        shape = cost["shape"]
        lines += [f"Guidance cost: batches of {cost['batch']} at {shape['width']}x{shape['height']}x"
                  f"{shape['frames']}, {cost['steps']} steps, the reward's defaults {cost['defaults']}; "
                  "median time per clip.", "",
                  "| guided samples | time per clip (s) | vs none guided |", "|---|---|---|"]
        for name in ("none", "half", "all"):
            lines.append(f"| {name} | {cost['per_clip_s'][name]:.3f} | {cost['per_clip_s'][name] / cost['per_clip_s']['none']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(text: str) -> None:
        print(f"[batching_bench] {text}", file=sys.stderr, flush=True)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.batching_bench", *args.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()})",
        "cores": os.cpu_count(), "load_start": list(os.getloadavg()),
    }
    args.device = device
    if "serving" not in args.skip:
        result["serving"] = run_serving(args, log)
    if "scaling" not in args.skip:
        result["scaling"] = run_step_scaling(args, log)
    if "guidance" not in args.skip:
        result["guidance"] = run_guidance_cost(args, log)
    result["load_end"] = list(os.getloadavg())
    publish(result, markdown(result), args.markdown, args.output_file, os.cpu_count() or 1, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
