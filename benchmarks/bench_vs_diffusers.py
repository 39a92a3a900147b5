"""Server throughput against the plain diffusers pipeline, same requests, same machine, one run.

::

    python -m benchmarks.bench_vs_diffusers --num-prompts 16 --steps 10 --max-batch 4 --rounds 3

1. Starts nrg-serve in this process (uvicorn in a thread, the model loaded once) unless ``--base-url``
   names a running one, and loads the same directory with ``DiffusionPipeline.from_pretrained``.
2. Runs ``--rounds`` rounds, each a server phase then a diffusers phase, back to back, so that both
   sides of a round see the same machine load (run minutes apart on a shared machine, one phase can
   meet twice the load of the other: a 16.6x "ratio" was measured that way). The server phase drives
   the server with the ``nrg-bench`` workload (``nrg_client.bench``): all requests unguided (diffusers
   has no reward guidance), sent at ``--request-rate`` (default: all at once) with at most
   ``--max-concurrency`` in flight, each followed to completion; the server encodes every video to
   mp4 and a webp thumbnail. The diffusers phase runs the same prompts, seeds, shapes, steps and CFG
   scales one by one, as a user would without the server::

       frames = pipe(prompt=p, height=h, width=w, num_frames=f, num_inference_steps=n, guidance_scale=g,
                     generator=torch.Generator("cpu").manual_seed(seed), output_type="np").frames[0]
       export_to_video(frames, path, fps=16)

   (where imageio-ffmpeg, which ``export_to_video`` needs, is not installed, the frames are written
   with PyAV instead, by the server's own ``guidance.video_io.write_video``, and the report says so).

3. Prints each round's throughputs and ratio (server / diffusers) and the median ratio, and warns when
   the load average exceeds the core count (the figures then say more about the other work than about
   either side). Unless ``--no-verify`` it also checks that the first request's video from the server
   holds the frames the pipeline made for it (see :func:`compare_videos`), so that both sides did the
   same work.

Both models stay loaded for the whole run (twice the memory of one). Needs torch and diffusers; the
client part needs ``nrg-client`` (``pip install -e clients/python``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from guidance.demo import DEFAULT_MODEL_DIR
from tools.in_process import serve_in_process

DTYPES = ("float32", "bfloat16", "float16")


def load_diffusers(model_dir: Path, *, device: str | None, dtype: str) -> tuple[Any, str, float]:
    """``DiffusionPipeline.from_pretrained`` of ``model_dir``: (pipeline, device, load seconds)."""
    import torch
    from diffusers import DiffusionPipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), use_safetensors=True,
                                             local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device, time.perf_counter() - start


def _call(pipe: Any, request: dict[str, Any]):
    import torch

    return pipe(prompt=request["prompt"], height=request["height"], width=request["width"],
                num_frames=request["num_frames"], num_inference_steps=request["num_inference_steps"],
                guidance_scale=request["guidance_scale"],
                generator=torch.Generator("cpu").manual_seed(request["seed"]), output_type="np").frames[0]


def diffusers_exporter() -> tuple[Any, str]:
    """``export_to_video`` (imageio + imageio-ffmpeg), as a diffusers user writes videos; where
    imageio-ffmpeg is missing (a 68 MB ffmpeg binary), PyAV through ``guidance.video_io.write_video``."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        from guidance.video_io import write_video

        def write(frames, path: str, fps: int) -> None:
            write_video(frames, path, fps=fps)

        return write, "PyAV (guidance.video_io.write_video; imageio-ffmpeg is not installed)"
    from diffusers.utils import export_to_video

    def export(frames, path: str, fps: int) -> None:
        export_to_video(list(frames), path, fps=fps)

    return export, "diffusers.utils.export_to_video"


def run_diffusers(pipe: Any, device: str, requests: Sequence[dict[str, Any]], *, out_dir: Path, fps: int,
                  keep_first: bool, progress: bool, label: str) -> dict[str, Any]:
    """One diffusers phase: the requests one by one through ``pipe(...)`` + ``export_to_video``, timed."""
    import torch
    from tqdm import tqdm

    export, _ = diffusers_exporter()
    latencies, first_frames = [], None
    start = time.perf_counter()
    for i, request in enumerate(tqdm(requests, desc=label, unit="req", disable=not progress, file=sys.stderr)):
        t0 = time.perf_counter()
        frames = _call(pipe, request)
        export(frames, str(out_dir / f"diffusers_{i}.mp4"), fps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - t0)
        if i == 0 and keep_first:
            first_frames = frames
    duration = time.perf_counter() - start
    frames_total = sum(r["num_frames"] for r in requests)
    return {"requests": len(requests), "duration_s": duration,
            "request_throughput": len(requests) / duration, "frame_throughput": frames_total / duration,
            "latency_mean_s": sum(latencies) / len(latencies), "first_frames": first_frames}


def _decoded(path: Path):
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def compare_videos(server_mp4: Path, frames, tmp_dir: Path, fps: int) -> dict[str, Any]:
    """Whether the server's mp4 holds the pipeline's ``frames``: both encoded by the same encoder
    (``guidance.video_io.write_video``) and decoded. A sample run in a batch may round a few pixels
    one level differently, which H.264 spreads a little, so "same" means the two decoded videos differ
    by less than a quarter of the encoder's own mean error (another seed differs by tens of levels)."""
    from guidance.video_io import frames_to_uint8, write_video

    write_video(frames, tmp_dir / "diffusers_0_same_encoder.mp4", fps=fps)
    a, b = _decoded(server_mp4), _decoded(tmp_dir / "diffusers_0_same_encoder.mp4")
    raw = frames_to_uint8(frames).astype(b.dtype)
    if a.shape != b.shape:
        return {"same": False, "shape_equal": False}
    diff = abs(a - b)
    codec = float(abs(b - raw).mean())
    mean = float(diff.mean())
    return {"same": mean <= max(0.25 * codec, 0.5), "shape_equal": True, "max_abs_diff_uint8": int(diff.max()),
            "mean_abs_diff_uint8": round(mean, 4), "codec_mean_abs_error_uint8": round(codec, 4)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_vs_diffusers", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="diffusers directory (default: embedded demo)")
    p.add_argument("--base-url", default=None, help="a running server hosting --model (default: start one here)")
    p.add_argument("--model-name", default=None, help="the model's name on --base-url (default: its first)")
    p.add_argument("--num-prompts", type=int, default=16, help="requests per round on each side (default 16)")
    p.add_argument("--rounds", type=int, default=3,
                   help="server phase + diffusers phase, repeated; the ratio reported is the median (default 3)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    p.add_argument("--size", default="64x64", help="WIDTHxHEIGHT (default 64x64)")
    p.add_argument("--num-frames", type=int, default=17, help="frames per video (default 17)")
    p.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--fps", type=int, default=16, help="mp4 frame rate (default 16)")
    p.add_argument("--max-batch", type=int, default=4, help="server batch size limit, in-process server (default 4)")
    p.add_argument("--batch-wait-ms", type=float, default=50.0,
                   help="server batch wait, in-process server (default 50)")
    p.add_argument("--max-concurrency", type=int, default=None, help="requests in flight (default: all)")
    p.add_argument("--request-rate", type=float, default=math.inf, help="Poisson arrival rate (default: all at once)")
    p.add_argument("--warmup-requests", type=int, default=1,
                   help="untimed requests on each side before the first round (default 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the first request (default 1)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (default float32)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checking that server and pipeline produced the same first video")
    p.add_argument("--output-file", "--output", dest="output_file", type=Path, default=None,
                   help="also write the full report as JSON")
    p.add_argument("--disable-tqdm", "--no-progress", dest="disable_progress", action="store_true",
                   help="no progress bars")
    return p


def _machine(device: str | None) -> str:
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _load() -> list[float] | None:
    """1/5/15-minute load averages: other work on a shared machine shows up here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def load_warning(load: list[float] | None, cores: int | None = None) -> str | None:
    """A warning when the 1-minute load average exceeds the core count, else None."""
    cores = cores or os.cpu_count() or 1
    if load is None or load[0] <= cores:
        return None
    return (f"load average {load[0]} exceeds the {cores} cores: other work is competing for the machine, "
            "so the figures are unreliable (each round's ratio shows how much they move)")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _warn(text: str | None) -> None:
    if text is not None:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from nrg_client.async_client import AsyncClient
        from nrg_client.bench import BenchConfig, run_async
    except ImportError as exc:
        raise RuntimeError(f"nrg-client is not installed ({exc}); pip install -e clients/python") from None
    import asyncio

    if args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1; got {args.rounds}")
    width, _, height = args.size.lower().partition("x")
    size = f"{int(width)}x{int(height)}"

    def bench_config(base_url: str, model: str | None, warmup: int) -> BenchConfig:
        return BenchConfig(base_url=base_url, model=model, num_prompts=args.num_prompts,
                           request_rate=args.request_rate, max_concurrency=args.max_concurrency,
                           guided_fraction=0.0, warmup_requests=warmup, size=size, num_frames=args.num_frames,
                           steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed,
                           guidance_probes=0, progress=not args.disable_progress)

    async def server_phase(config: BenchConfig, out: Path | None) -> dict[str, Any]:
        result = await run_async(config)
        first = result["requests"][0]
        if out is not None and first["status"] == "completed":
            async with AsyncClient(config.base_url) as client:
                await client.download(first["id"], out / "server_0.mp4")
        if result["completed"] != result["num_requests"]:
            raise RuntimeError(f"server: {result['failed']} of {result['num_requests']} requests failed: "
                               f"{result['errors']}")
        return result

    load_before = _load()
    _warn(load_warning(load_before))
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nrg-bench-") as tmp, contextlib.ExitStack() as stack:
        tmp_dir = Path(tmp)
        if args.base_url:
            url, name = args.base_url, args.model_name
        else:
            url, name = stack.enter_context(serve_in_process(
                args.model, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                max_queue=max(64, args.num_prompts + args.warmup_requests), device=args.device, dtype=args.dtype,
                data_dir=tmp_dir / "data"))
        pipe, device, load_s = load_diffusers(args.model, device=args.device, dtype=args.dtype)
        first_frames = verify = None
        for index in range(args.rounds):
            first = index == 0
            served = asyncio.run(server_phase(bench_config(url, name, args.warmup_requests if first else 0),
                                              tmp_dir if first and args.verify else None))
            requests = [{k: r[k] for k in ("prompt", "seed", "width", "height", "num_frames", "num_inference_steps",
                                           "guidance_scale")} for r in served["requests"]]
            if first:
                for i in range(args.warmup_requests):
                    _call(pipe, requests[i % len(requests)])
            plain = run_diffusers(pipe, device, requests, out_dir=tmp_dir, fps=args.fps,
                                  keep_first=first and args.verify, progress=not args.disable_progress,
                                  label=f"diffusers round {index + 1}/{args.rounds}")
            first_frames = plain.pop("first_frames") if first else first_frames
            rounds.append({"round": index + 1, "load_average": _load(),
                           "server": {k: served[k] for k in ("num_requests", "completed", "duration_s",
                                                             "request_throughput", "frame_throughput", "latency_s",
                                                             "queue_time_s", "inference_time_s", "encode_time_s",
                                                             "batch_size")},
                           "diffusers": {k: v for k, v in plain.items() if k != "first_frames"},
                           "throughput_ratio": served["request_throughput"] / plain["request_throughput"]})
        if args.verify:
            verify = compare_videos(tmp_dir / "server_0.mp4", first_frames, tmp_dir, args.fps)

    load_after = _load()
    _warn(load_warning(load_after))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.bench_vs_diffusers", *args.argv]),
        "machine": _machine(args.device),
        "load_average": {"before": load_before, "after": load_after},
        "load_warning": load_warning(load_before) or load_warning(load_after),
        "model": str(args.model),
        "workload": {"num_prompts": args.num_prompts, "rounds": args.rounds, "size": size,
                     "num_frames": args.num_frames, "steps": args.steps,
                     "guidance_scale": requests[0]["guidance_scale"],
                     "max_batch": None if args.base_url else args.max_batch,
                     "max_concurrency": args.max_concurrency, "request_rate": served["config"]["request_rate"],
                     "warmup_requests": args.warmup_requests},
        "diffusers_load_s": load_s,
        "diffusers_export": diffusers_exporter()[1],
        "rounds": rounds,
        "throughput_ratio": _median([r["throughput_ratio"] for r in rounds]),
        "verify": verify,
    }


def format_report(result: dict[str, Any]) -> str:
    w = result["workload"]
    lines = [
        " nrg-serve vs diffusers ".center(72, "="),
        f"{'Machine:':<40}{result['machine']}",
        f"{'Load average before / after:':<40}{result['load_average']['before']} / {result['load_average']['after']}",
        f"{'Workload:':<40}{w['num_prompts']} unguided requests per round, {w['size']} x {w['num_frames']} "
        f"frames, {w['steps']} steps, cfg {w['guidance_scale']}",
        f"{'Server max batch:':<40}{w['max_batch'] or '-'}",
        f"{'Diffusers writes videos with:':<40}{result.get('diffusers_export', 'export_to_video')}",
        f"{'round':<8}{'':<32}{'requests/s':>12}{'frames/s':>12}{'time (s)':>10}{'ratio':>8}",
    ]
    for r in result["rounds"]:
        s, d = r["server"], r["diffusers"]
        mean_batch = s["batch_size"]["metrics"]["mean"]
        batch = "" if mean_batch is None else f", mean batch {mean_batch:.2f}"
        lines += [
            f"{r['round']:<8}{'nrg-serve (HTTP, batched' + batch + '):':<32}{s['request_throughput']:>12.3f}"
            f"{s['frame_throughput']:>12.2f}{s['duration_s']:>10.2f}{r['throughput_ratio']:>7.2f}x",
            f"{'':<8}{'diffusers pipe(), one by one:':<32}{d['request_throughput']:>12.3f}"
            f"{d['frame_throughput']:>12.2f}{d['duration_s']:>10.2f}",
        ]
    lines.append(f"{'Throughput ratio (server/diffusers):':<40}{result['throughput_ratio']:.2f}x "
                 f"(median of {len(result['rounds'])} rounds)")
    if result["load_warning"]:
        lines.append(f"{'Warning:':<40}{result['load_warning']}")
    if result["verify"] is not None:
        v = result["verify"]
        lines.append(f"{'Same first video as diffusers:':<40}{'yes' if v['same'] else 'NO'} (mean |diff| "
                     f"{v.get('mean_abs_diff_uint8')} vs codec error {v.get('codec_mean_abs_error_uint8')}, 0-255)")
    lines.append("=" * 72)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        result = run(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        parser.exit(2, f"bench_vs_diffusers: error: {exc}\n")
    print(format_report(result))
    if args.output_file is not None:
        args.output_file.parent.mkdir(parents=True, exist_ok=True)
        args.output_file.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.output_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
