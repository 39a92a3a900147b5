"""``nrg-bench``: drive a running nrg-serve server with a video workload and report its throughput.

Flags follow SGLang's ``bench_serving`` where they fit (``--num-prompts``, ``--request-rate``,
``--max-concurrency``, ``--warmup-requests``, ``--output-file``, ``--disable-tqdm``, ``--seed``,
``--extra-request-body``). Requests are sent open-loop at a Poisson ``--request-rate`` (req/s; ``inf``
sends them all at once), optionally capped at ``--max-concurrency`` in flight (closed loop). Each
request is created, followed to its end over its SSE event stream (or by polling), and timed
client-side; the server's own per-job timings (queue wait, inference, encode, batch size) and the
``nrg_batch_size`` histogram of ``/metrics`` are read after the measured window. A short sequential
probe then times a guided and an unguided request alone at the same shape.

Only the standard library, httpx and pydantic: no torch, no tqdm (the progress line is our own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import httpx

from nrg_client import __version__
from nrg_client.arg_types import window
from nrg_client.async_client import AsyncClient
from nrg_client.errors import NRGError
from nrg_client.types import Video

DEFAULT_PROMPTS = (
    "a red circle moving right",
    "a blue square moving up",
    "a green triangle spinning slowly",
    "a yellow ball bouncing on the floor",
    "waves rolling onto a sandy beach at sunset",
    "a cat walking across a sunny kitchen",
    "snow falling over a quiet forest",
    "a paper boat drifting down a stream",
    "city lights flickering at night, time-lapse",
    "a hot air balloon rising over green hills",
    "rain drops running down a window",
    "a candle flame swaying in the dark",
    "clouds drifting over a mountain ridge",
    "a windmill turning in a field of tulips",
    "fireworks bursting over a harbour",
    "a dog chasing a frisbee in a park",
)


# -- configuration and workload ---------------------------------------------------------------------


@dataclass
class BenchConfig:
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    num_prompts: int = 16
    request_rate: float = math.inf
    max_concurrency: int | None = None
    weights: str = "fixed"
    guided_fraction: float | None = None
    strength: float | None = None
    window: tuple[float, float] | None = None
    mode: str | None = None
    warmup_requests: int = 1
    size: str | None = None
    num_frames: int | None = None
    steps: int | None = None
    #: Mixed step counts: each request draws one of these (overrides ``steps``).
    steps_mix: list[int] = field(default_factory=list)
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    seed: int = 1
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    completion: str = "sse"
    download_dir: str | None = None
    guidance_probes: int | None = None
    timeout: float = 1800.0
    max_retries: int = 10
    extra_request_body: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass
class BenchRequest:
    index: int
    prompt: str
    seed: int
    weights: dict[str, float] | None  # None = unguided
    steps: int | None = None  # None = the config's ``steps``

    @property
    def guided(self) -> bool:
        return self.weights is not None


def parse_weights_spec(spec: str, objectives: Sequence[str]) -> tuple[str, dict[str, float] | None]:
    """``fixed`` | ``random`` | ``name=value,...`` (a fixed explicit vector) -> (kind, fixed weights)."""
    if spec in ("fixed", "random"):
        if spec == "fixed":
            return "fixed", {name: round(1.0 / len(objectives), 6) for name in objectives} if objectives else {}
        return "random", None
    weights = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--weights must be fixed, random or name=value,...; got {spec!r}")
        weights[name.strip()] = float(value)
    unknown = set(weights) - set(objectives)
    if unknown:
        raise ValueError(f"--weights names {sorted(unknown)} are not objectives of the model: {list(objectives)}")
    return "fixed", weights


def build_workload(num: int, objectives: Sequence[str], weights: str, guided_fraction: float, seed: int,
                   prompts: Sequence[str], seed_offset: int = 0, steps_mix: Sequence[int] = ()) -> list[BenchRequest]:
    """``num`` requests, deterministic in ``seed``: exactly ``round(num * guided_fraction)`` guided
    ones at random positions, each with the fixed weights or a random point of the simplex, and (with
    ``steps_mix``) a step count drawn from it, from a generator of its own so the rest is unchanged."""
    if any(steps < 1 for steps in steps_mix):
        raise ValueError(f"--steps-mix values must be >= 1; got {list(steps_mix)}")
    steps_rng = random.Random(seed * 7_919 + seed_offset)
    if not 0.0 <= guided_fraction <= 1.0:
        raise ValueError(f"--guided-fraction must be in [0, 1]; got {guided_fraction}")
    if guided_fraction > 0 and not objectives:
        raise ValueError("the model has no reward objectives, so --guided-fraction must be 0")
    if not prompts:
        raise ValueError("no prompts")
    kind, fixed = parse_weights_spec(weights, objectives) if objectives else ("fixed", {})
    rng = random.Random(seed * 1_000_003 + seed_offset)
    guided = set(rng.sample(range(num), round(num * guided_fraction)))
    out = []
    for i in range(num):
        w = None
        if i in guided:
            if kind == "random":
                raw = [rng.random() + 1e-6 for _ in objectives]
                w = {name: round(v / sum(raw), 6) for name, v in zip(objectives, raw, strict=True)}
            else:
                w = dict(fixed or {})
        steps = steps_rng.choice(list(steps_mix)) if steps_mix else None
        out.append(BenchRequest(i, prompts[(seed_offset + i) % len(prompts)], seed * 100_000 + seed_offset + i, w,
                                steps))
    return out


# -- statistics -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "min": None, "max": None}
    return {"mean": sum(values) / len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "min": min(values), "max": max(values)}


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')


def parse_histogram(text: str, name: str) -> dict[str, Any]:
    """``{"count", "sum", "buckets": {le: cumulative count}}`` of one Prometheus histogram."""
    out: dict[str, Any] = {"count": 0.0, "sum": 0.0, "buckets": {}}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        metric, labels, value = match["name"], match["labels"] or "", float(match["value"])
        if metric == f"{name}_count":
            out["count"] = value
        elif metric == f"{name}_sum":
            out["sum"] = value
        elif metric == f"{name}_bucket":
            le = re.search(r'le="([^"]+)"', labels)
            if le:
                out["buckets"][le[1]] = value
    return out


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What ``nrg_batch_size`` (samples per denoising step) observed between two snapshots: the steps
    run, the sample-steps they served, their mean (the achieved batch size) and per-bucket counts."""
    count = after["count"] - before["count"]
    total = after["sum"] - before["sum"]
    cumulative = {le: after["buckets"].get(le, 0.0) - before["buckets"].get(le, 0.0) for le in after["buckets"]}
    ordered = sorted(cumulative, key=lambda le: math.inf if le == "+Inf" else float(le))
    buckets, previous = {}, 0.0
    for le in ordered:
        n = cumulative[le] - previous
        previous = cumulative[le]
        if n:
            label = "+Inf" if le == "+Inf" else f"{float(le):g}"
            buckets[f"<={label}"] = int(round(n))
    return {"steps": int(round(count)), "sample_steps": total, "mean": total / count if count else None,
            "histogram": buckets}


# -- progress ---------------------------------------------------------------------------------------


class Progress:
    """A one-line progress report on stderr (rewritten in place on a terminal, a few lines otherwise)."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self._next_mark = 0.25

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        width = 24
        filled = int(width * self.done / self.total)
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                f" failed {self.failed} | {elapsed:.1f}s | {self.done / elapsed if elapsed else 0:.2f} req/s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
            self.stream.flush()
        elif self.done / self.total >= self._next_mark or self.done == self.total:
            while self._next_mark <= self.done / self.total:
                self._next_mark += 0.25
            self.stream.write(line + "\n")
            self.stream.flush()


# -- running ----------------------------------------------------------------------------------------


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, NRGError):
        if exc.status is not None:
            return f"http_{exc.status}_{exc.code or 'error'}"
        return exc.code or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


class _Runner:
    def __init__(self, client: AsyncClient, config: BenchConfig, model: str) -> None:
        self.client, self.config, self.model = client, config, model

    def _create_kwargs(self, request: BenchRequest) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = {
            "model": self.model, "seed": request.seed, "size": c.size, "num_frames": c.num_frames,
            "num_inference_steps": request.steps or c.steps, "guidance_scale": c.guidance_scale, "negative_prompt": c.negative_prompt,
            "extra_body": c.extra_request_body or None,
        }
        if request.guided:
            kwargs.update(reward_weights=request.weights, strength=c.strength, window=c.window, mode=c.mode)
        return kwargs

    async def one(self, request: BenchRequest) -> dict[str, Any]:
        """Send one request and follow it to its end; never raises (errors are recorded)."""
        record: dict[str, Any] = {"index": request.index, "prompt": request.prompt, "seed": request.seed,
                                  "guided": request.guided, "weights": request.weights, "id": None,
                                  "status": None, "error": None}
        start = time.perf_counter()
        try:
            video = await self.client.create(request.prompt, **self._create_kwargs(request))
            record["id"] = video.id
            record["create_s"] = time.perf_counter() - start
            status, error = await asyncio.wait_for(self._follow(video.id), timeout=self.config.timeout)
            if status == "completed" and self.config.download_dir:
                await self.client.download(video.id, self.config.download_dir)
            record["latency_s"] = time.perf_counter() - start
            record["status"] = status
            if status != "completed":
                record["error"] = f"job_{status}_{error or 'unknown'}"
        except (NRGError, httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
            record["status"] = "error"
            record["error"] = _error_kind(exc)
            record["error_message"] = str(exc)[:300]
            record["latency_s"] = time.perf_counter() - start
        return record

    async def _follow(self, video_id: str) -> tuple[str, str | None]:
        if self.config.completion == "poll":
            video = await self.client.wait(video_id, timeout=None, poll_interval=0.05, max_poll_interval=0.5)
            return video.status, video.error.code if video.error else None
        async for event in self.client.events(video_id):
            if event.terminal:
                return event.type, event.error.code if event.error else None
        raise NRGError(f"event stream of {video_id} ended without a terminal event", code="stream_incomplete")

    async def run_all(self, requests: Sequence[BenchRequest], rate: float, concurrency: int | None,
                      progress: Progress | None, rng: random.Random) -> list[dict[str, Any]]:
        semaphore = asyncio.Semaphore(concurrency) if concurrency else None

        async def limited(request: BenchRequest) -> dict[str, Any]:
            if semaphore is None:
                record = await self.one(request)
            else:
                async with semaphore:
                    record = await self.one(request)
            if progress is not None:
                progress.update(record["status"] == "completed")
            return record

        tasks = []
        for request in requests:
            tasks.append(asyncio.create_task(limited(request)))
            if math.isfinite(rate) and rate > 0:
                await asyncio.sleep(rng.expovariate(rate))
        return list(await asyncio.gather(*tasks))

    async def fetch(self, records: Sequence[dict[str, Any]]) -> dict[str, Video]:
        """The final job objects of the records that got an id (after the timed window)."""
        semaphore = asyncio.Semaphore(8)

        async def get(video_id: str) -> Video | None:
            async with semaphore:
                try:
                    return await self.client.get(video_id)
                except NRGError:
                    return None

        ids = [r["id"] for r in records if r["id"]]
        videos = await asyncio.gather(*(get(i) for i in ids))
        return {i: v for i, v in zip(ids, videos, strict=True) if v is not None}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


async def run_async(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark described by ``config`` and return the result (what ``--output-file`` holds)."""
    if config.num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1; got {config.num_prompts}")
    if config.max_concurrency is not None and config.max_concurrency < 1:
        raise ValueError(f"--max-concurrency must be >= 1; got {config.max_concurrency}")
    if not config.request_rate > 0:
        raise ValueError(f"--request-rate must be > 0 (inf: all at once); got {config.request_rate}")
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
    async with AsyncClient(config.base_url, api_key=config.api_key, max_retries=config.max_retries,
                           timeout=httpx.Timeout(120.0, connect=10.0), transport=transport) as client:
        models = await client.models()
        if not models:
            raise ValueError("the server hosts no models")
        by_name = {m.id: m for m in models}
        if config.model is not None and config.model not in by_name:
            raise ValueError(f"model {config.model!r} is not hosted; hosted: {', '.join(by_name)}")
        info = by_name[config.model] if config.model else models[0]
        objectives = list(info.reward_objectives)
        fraction = config.guided_fraction if config.guided_fraction is not None else (0.5 if objectives else 0.0)
        workload = build_workload(config.num_prompts, objectives, config.weights, fraction, config.seed,
                                  config.prompts, steps_mix=config.steps_mix)
        warmup = build_workload(config.warmup_requests, objectives, config.weights, fraction, config.seed,
                                config.prompts, seed_offset=50_000) if config.warmup_requests else []
        runner = _Runner(client, config, info.id)
        rng = random.Random(config.seed)
        if warmup:
            warm = await runner.run_all(warmup, math.inf, None, Progress(len(warmup), "warmup", config.progress), rng)
            failed = [r for r in warm if r["status"] != "completed"]
            if failed:
                raise RuntimeError(f"warmup request failed: {failed[0]['error']}: {failed[0].get('error_message', '')}")

        metrics_before = parse_histogram(await client.metrics(), "nrg_batch_size")
        retries_before = client.retry_count
        progress = Progress(len(workload), "nrg-bench", config.progress)
        started_at = datetime.now(timezone.utc)
        start = time.perf_counter()
        records = await runner.run_all(workload, config.request_rate, config.max_concurrency, progress, rng)
        duration = time.perf_counter() - start
        retries = client.retry_count - retries_before
        metrics_after = parse_histogram(await client.metrics(), "nrg_batch_size")

        videos = await runner.fetch(records)
        for record in records:
            video = videos.get(record["id"] or "")
            if video is not None:
                for key in ("queue_time_s", "inference_time_s", "encode_time_s", "batch_size", "num_frames",
                            "width", "height", "num_inference_steps", "guidance_scale"):
                    record[key] = getattr(video, key)

        probe = await _guidance_probe(runner, config, objectives, fraction)

    done = [r for r in records if r["status"] == "completed"]
    guided = [r for r in done if r["guided"]]
    unguided = [r for r in done if not r["guided"]]
    frames = sum(r.get("num_frames") or 0 for r in done)
    job_batches = Counter(r.get("batch_size") for r in done if r.get("batch_size"))
    shapes = sorted({(r.get("width"), r.get("height"), r.get("num_frames"), r.get("num_inference_steps"))
                     for r in done})
    result: dict[str, Any] = {
        "tool": f"nrg-bench {__version__}",
        "date": started_at.isoformat(timespec="seconds"),
        "base_url": client.base_url,
        "model": info.id,
        "config": {k: v for k, v in asdict(config).items() if k not in ("api_key", "prompts")}
        | {"guided_fraction": fraction, "request_rate": _json_float(config.request_rate)},
        "shapes": [{"width": w, "height": h, "num_frames": f, "num_inference_steps": s} for w, h, f, s in shapes],
        "num_requests": len(records),
        "warmup_requests": len(warmup),
        "completed": len(done),
        "failed": len(records) - len(done),
        "guided": sum(r["guided"] for r in records),
        "unguided": sum(not r["guided"] for r in records),
        "retries": retries,
        "errors": dict(Counter(r["error"] for r in records if r["error"])),
        "duration_s": duration,
        "request_throughput": len(done) / duration if duration else None,
        "frame_throughput": frames / duration if duration else None,
        "latency_s": summary([r["latency_s"] for r in done]),
        "queue_time_s": summary([r.get("queue_time_s") for r in done]),
        "inference_time_s": summary([r.get("inference_time_s") for r in done]),
        "encode_time_s": summary([r.get("encode_time_s") for r in done]),
        "batch_size": {
            "metrics": histogram_delta(metrics_before, metrics_after),
            "jobs": {"mean": _mean([r.get("batch_size") for r in done]),
                     "histogram": {str(k): v for k, v in sorted(job_batches.items())}},
        },
        "guided_vs_unguided": {
            "guided_latency_mean_s": _mean([r["latency_s"] for r in guided]),
            "unguided_latency_mean_s": _mean([r["latency_s"] for r in unguided]),
            "latency_ratio": _ratio(_mean([r["latency_s"] for r in guided]),
                                    _mean([r["latency_s"] for r in unguided])),
            "guided_inference_mean_s": _mean([r.get("inference_time_s") for r in guided]),
            "unguided_inference_mean_s": _mean([r.get("inference_time_s") for r in unguided]),
            "inference_ratio": _ratio(_mean([r.get("inference_time_s") for r in guided]),
                                      _mean([r.get("inference_time_s") for r in unguided])),
            "note": "workload jobs may share mixed batches; 'probe' times each kind alone (batch size 1)",
            "probe": probe,
        },
        "requests": records,
    }
    return result


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


async def _guidance_probe(runner: _Runner, config: BenchConfig, objectives: Sequence[str],
                          fraction: float) -> dict[str, Any] | None:
    """Unguided then guided requests one at a time (batch size 1) at the workload's shape."""
    probes = config.guidance_probes if config.guidance_probes is not None else (1 if objectives and fraction else 0)
    if probes <= 0 or not objectives:
        return None
    kind, fixed = parse_weights_spec(config.weights, objectives)
    weights = fixed if kind == "fixed" else {name: round(1.0 / len(objectives), 6) for name in objectives}
    times: dict[str, list[dict[str, Any]]] = {"unguided": [], "guided": []}
    for i in range(probes):
        for label, w in (("unguided", None), ("guided", weights)):
            request = BenchRequest(-1 - i, config.prompts[0], config.seed * 100_000 + 90_000 + i, w)
            record = await runner.one(request)
            if record["status"] != "completed":
                return {"error": record["error"]}
            video = await runner.client.get(record["id"])
            times[label].append({"latency_s": record["latency_s"], "inference_time_s": video.inference_time_s,
                                 "batch_size": video.batch_size})
    out: dict[str, Any] = {"probes": probes, "weights": weights}
    for label in ("unguided", "guided"):
        out[f"{label}_latency_s"] = _mean([t["latency_s"] for t in times[label]])
        out[f"{label}_inference_s"] = _mean([t["inference_time_s"] for t in times[label]])
    out["batch_sizes"] = sorted({t["batch_size"] for ts in times.values() for t in ts})
    out["latency_ratio"] = _ratio(out["guided_latency_s"], out["unguided_latency_s"])
    out["inference_ratio"] = _ratio(out["guided_inference_s"], out["unguided_inference_s"])
    return out


def run(config: BenchConfig) -> dict[str, Any]:
    return asyncio.run(run_async(config))


# -- report -----------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    c = result["config"]
    rows: list[tuple[str, Any] | str] = ["nrg-bench result"]
    shape = ", ".join(f"{s['width']}x{s['height']} x {s['num_frames']} frames, {s['num_inference_steps']} steps"
                      for s in result["shapes"]) or "-"
    rows += [
        ("Model", result["model"]),
        ("Shape", shape),
        ("Request rate (req/s)", c["request_rate"]),
        ("Max concurrency", c["max_concurrency"] or "-"),
        ("Requests (warmup excluded)", result["num_requests"]),
        ("Guided / unguided", f"{result['guided']} / {result['unguided']}"),
        ("Completed / failed", f"{result['completed']} / {result['failed']}"),
        ("Retries (429/503)", result["retries"]),
        ("Duration (s)", _fmt(result["duration_s"], 2)),
        ("Request throughput (req/s)", _fmt(result["request_throughput"])),
        ("Frame throughput (frames/s)", _fmt(result["frame_throughput"], 2)),
        "Latency (s)",
    ]
    lat = result["latency_s"]
    rows += [("Mean / P50", f"{_fmt(lat['mean'])} / {_fmt(lat['p50'])}"),
             ("P90 / P99", f"{_fmt(lat['p90'])} / {_fmt(lat['p99'])}")]
    rows += ["Server time per job (s, mean)",
             ("Queue wait", _fmt(result["queue_time_s"]["mean"])),
             ("Inference (batch)", _fmt(result["inference_time_s"]["mean"])),
             ("Encode", _fmt(result["encode_time_s"]["mean"]))]
    batches = result["batch_size"]
    hist = " ".join(f"{k}:{v}" for k, v in batches["metrics"]["histogram"].items()) or "-"
    job_hist = " ".join(f"{k}:{v}" for k, v in batches["jobs"]["histogram"].items()) or "-"
    rows += ["Batching",
             ("Denoising steps run (/metrics)", batches["metrics"]["steps"]),
             ("Mean batch size (/metrics)", _fmt(batches["metrics"]["mean"], 2)),
             ("Batch histogram (/metrics)", hist),
             ("Mean batch size (jobs)", _fmt(batches["jobs"]["mean"], 2)),
             ("Jobs by batch size", job_hist)]
    g = result["guided_vs_unguided"]
    rows += ["Guided vs unguided",
             ("Latency ratio (workload)", _fmt(g["latency_ratio"])),
             ("Inference ratio (workload)", _fmt(g["inference_ratio"]))]
    if g["probe"] and "error" not in g["probe"]:
        p = g["probe"]
        alone = f"{_fmt(p['inference_ratio'])} ({_fmt(p['guided_inference_s'])} / {_fmt(p['unguided_inference_s'])} s)"
        rows += [("Inference ratio (alone)", alone)]
    elif g["probe"]:
        rows += [("Probe", g["probe"]["error"])]
    errors = ", ".join(f"{k}: {v}" for k, v in result["errors"].items()) or "none"
    rows += [("Errors", errors)]
    width = 60
    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(f" {row} ".center(width, "=" if not lines else "-"))
        else:
            lines.append(f"{row[0] + ':':<34}{row[1]}")
    lines.append("=" * width)
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _size(text: str) -> str:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 64x64; got {text!r}")
    return f"{int(w)}x{int(h)}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nrg-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default=None, help="server URL (default: $NRG_BASE_URL or http://HOST:PORT)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="bearer key (default: $NRG_API_KEY)")
    p.add_argument("--model", default=None, help="hosted model name (default: the server's first)")
    p.add_argument("--num-prompts", type=int, default=16, help="measured requests")
    p.add_argument("--request-rate", type=float, default=math.inf,
                   help="Poisson arrival rate, req/s (inf: all at once)")
    p.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight (closed loop)")
    p.add_argument("--weights", default="fixed",
                   help="objective weights of guided requests: fixed (uniform), random (per request), or name=v,...")
    p.add_argument("--guided-fraction", type=float, default=None,
                   help="share of guided requests (default: 0.5 if the model has a reward model, else 0)")
    p.add_argument("--strength", type=float, default=None, help="guidance strength (default: the server's)")
    p.add_argument("--window", type=window, default=None, help="guidance window T_LO,T_HI (default: the server's)")
    p.add_argument("--mode", choices=("relative", "sum", "unit", "best_of_n", "fk"), default=None,
                   help="guidance mode (default: the server's)")
    p.add_argument("--warmup-requests", "--warmup", dest="warmup_requests", type=int, default=1,
                   help="requests run (all at once) before the measured ones and excluded from them")
    p.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    p.add_argument("--num-frames", type=int, default=None, help="frames (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--steps-mix", type=_int_list, default=[], metavar="N,N,...",
                   help="mixed step counts: each request draws one of these (overrides --steps)")
    p.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seed", type=int, default=1, help="seeds the workload: arrivals, guided picks, weights, seeds")
    p.add_argument("--prompts-file", type=Path, default=None, help="one prompt per line (default: built-in list)")
    p.add_argument("--completion", choices=("sse", "poll"), default="sse",
                   help="how the end of a job is detected: its SSE stream or polling")
    p.add_argument("--download-dir", default=None, help="also download every video here (timed)")
    p.add_argument("--guidance-probes", type=int, default=None,
                   help="sequential guided+unguided pairs timed alone after the run (default 1 with a reward model)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one request may take")
    p.add_argument("--max-retries", type=int, default=10, help="client retries of 429/503 answers")
    p.add_argument("--extra-request-body", default=None, help="JSON object merged into every request body")
    p.add_argument("--output-file", "--output", dest="output_file", type=Path, default=None,
                   help="write the result JSON here")
    p.add_argument("--disable-tqdm", "--no-progress", dest="disable_progress", action="store_true",
                   help="no progress line on stderr")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    base_url = args.base_url or os.environ.get("NRG_BASE_URL") or f"http://{args.host}:{args.port}"
    prompts = list(DEFAULT_PROMPTS)
    if args.prompts_file is not None:
        prompts = [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    extra = json.loads(args.extra_request_body) if args.extra_request_body else {}
    if not isinstance(extra, dict):
        raise ValueError("--extra-request-body must be a JSON object")
    return BenchConfig(
        base_url=base_url, api_key=args.api_key, model=args.model, num_prompts=args.num_prompts,
        request_rate=args.request_rate, max_concurrency=args.max_concurrency, weights=args.weights,
        guided_fraction=args.guided_fraction, strength=args.strength, window=args.window, mode=args.mode,
        warmup_requests=args.warmup_requests, size=args.size, num_frames=args.num_frames, steps=args.steps,
        steps_mix=args.steps_mix,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, seed=args.seed, prompts=prompts,
        completion=args.completion, download_dir=args.download_dir, guidance_probes=args.guidance_probes,
        timeout=args.timeout, max_retries=args.max_retries, extra_request_body=extra,
        progress=not args.disable_progress,
    )


def write_result(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        result = run(config)
    except (ValueError, RuntimeError, NRGError, OSError) as exc:
        parser.exit(2, f"nrg-bench: error: {exc}\n")
    print(format_table(result))
    if args.output_file is not None:
        write_result(result, args.output_file)
        print(f"wrote {args.output_file}")
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
