"""``python -m benchmarks.compile_bench``: what ``--compile`` buys per denoising step, eager against compiled.

One ``BatchState.step()`` of a batch of B rows as the server runs it (CFG on: two denoiser calls, then
the fused step), unguided and guided (every row's reward gradient through the trunk), at B = 1 and 4::

    python -m benchmarks.compile_bench                                  # the embedded demo model
    python -m benchmarks.compile_bench --model wan1.3b --rounds 3       # Wan2.1-1.3B's architecture, 64x64x9
    python -m benchmarks.compile_bench --benchmarks docs/benchmarks.md  # and append the section there

``--model``: ``demo`` (the embedded model and its reward), ``wan1.3b`` (Wan2.1-T2V-1.3B's transformer
configuration with random weights, ``benchmarks.gpu_check.build_random_wan``, and an untrained reward of
its first 4 blocks), ``tiny`` (the tiny Wan pipeline of ``guidance.testing.tiny``, 32x32x9: checks the
benchmark, measures nothing) or a diffusers directory; the last two with an untrained reward of their
first block.

The same weights run eager and compiled (the compiled blocks' forwards are set aside for the eager
turns): each round builds an eager and a compiled batch per mode and size and steps them in turn, the
order alternating, so a loaded machine slows both alike; the ratio is the median of the paired steps'
eager / compiled times. The warm-up (``guidance.compilation.warm_up``, batch sizes 1 to the largest B)
runs first and its seconds are reported; a compilation during the rounds is reported as a recompile
(the target is none).
``--benchmarks FILE`` appends the markdown section, dated, with the command, device, torch version and
load average, to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MODES = ("unguided", "guided")
#: Steps of every measured sample's schedule (the rounds take a few of them, mid-schedule or not: a
#: step costs the same wherever it is).
STEPS = 50
TARGET = 1.25
WAN_SHAPE = (64, 64, 9)  # height, width, frames
WAN_TRUNK_BLOCKS = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="demo, wan1.3b, tiny or a diffusers directory (default demo)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--batches", default="1,4", help="batch sizes in rows (default 1,4)")
    p.add_argument("--modes", default=",".join(MODES), help="unguided, guided or both (default both)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, each with new batches (default 5)")
    p.add_argument("--repeats", type=int, default=4, help="timed steps of each variant per batch and round, in "
                                                          "alternating order (default 4)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--cold-cache", action="store_true",
                   help="compile into an empty inductor cache (a new temporary directory): the warm-up a first "
                        "start pays; a restart reuses $TORCHINDUCTOR_CACHE_DIR (default /tmp/torchinductor_USER)")
    p.add_argument("--size", default=None, metavar="WxH", help="video size (default: the model's; wan1.3b 64x64)")
    p.add_argument("--frames", type=int, default=None, help="frames (default: the model's; wan1.3b 9)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--dtype", default="auto", help="weights dtype (default auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--output-file", type=Path, default=None, help="also write every figure as JSON")
    p.add_argument("--benchmarks", type=Path, default=None, metavar="FILE",
                   help="append the dated markdown section to FILE (e.g. docs/benchmarks.md)")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.batches or min(args.batches) < 1 or not set(args.modes) <= set(MODES) or not args.modes:
        p.error(f"--batches must be integers >= 1 and --modes among {', '.join(MODES)}")
    if args.rounds < 1 or args.repeats < 1:
        p.error("--rounds and --repeats must be >= 1")
    return args


def _load(args: argparse.Namespace):
    """The family, its reward model and the measured shape."""
    import torch

    from guidance import demo
    from guidance.families import load_pipeline
    from guidance.families.base import VideoShape
    from guidance.precision import configure_matmul, resolve_device, resolve_dtype
    from guidance.reward_model import init_reward_model, load_reward_model
    from server import pipeline_defaults

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    configure_matmul(device)
    if args.model == "demo":
        family = load_pipeline(demo.DEFAULT_MODEL_DIR, device=device, dtype=dtype)
        reward, shape = load_reward_model(demo.DEFAULT_REWARD_DIR, family), demo.DEFAULT_SHAPE
    elif args.model == "wan1.3b":
        from benchmarks.gpu_check import OBJECTIVES, build_random_wan
        from guidance.families.wan import WanFamily

        family = WanFamily(build_random_wan(False, str(device), dtype))
        with torch.device(device):
            reward = init_reward_model(family, OBJECTIVES, num_blocks=WAN_TRUNK_BLOCKS)
        shape = VideoShape(*WAN_SHAPE)
    elif args.model == "tiny":
        from guidance.families.wan import WanFamily
        from guidance.testing.tiny import build_tiny_pipeline

        family = WanFamily(build_tiny_pipeline("wan").to(device=device, dtype=dtype))
        reward, shape = init_reward_model(family, ["vq", "mq"], num_blocks=1), VideoShape(32, 32, 9)
    else:
        family = load_pipeline(Path(args.model), device=device, dtype=dtype)
        reward = init_reward_model(family, ["vq", "mq"], num_blocks=1)
        shape = pipeline_defaults.read(Path(args.model), family).shape
    if args.size or args.frames:
        width, height = map(int, args.size.split("x")) if args.size else (shape.width, shape.height)
        shape = VideoShape(height=height, width=width, frames=args.frames or shape.frames)
    family.check_shape(shape)
    return family, reward, shape


def _compiled_blocks(family, reward) -> dict[Any, Any]:
    """Every compiled block and its compiled ``forward`` (``guidance.compilation.compile_model`` sets it
    on the instance, in front of the class's eager one)."""
    modules = [*family.denoisers, reward.trunk]
    return {block: vars(block)["forward"] for module in modules for name in family.block_lists
            for block in getattr(module, name, ()) if "forward" in vars(block)}


@contextmanager
def _eager(compiled: dict[Any, Any]) -> Iterator[None]:
    """Within: the blocks run their class's eager ``forward``."""
    for block in compiled:
        del block.forward
    try:
        yield
    finally:
        for block, forward in compiled.items():
            block.forward = forward


def _batch(family, reward, shape, rows: int, mode: str):
    """A batch of ``rows`` rows (all guided or none) that has taken its first step."""
    from guidance.batch_state import BatchState
    from guidance.nrg import GuidanceSpec
    from guidance.sample_types import SampleSpec

    guidance = GuidanceSpec({reward.objectives[0]: 1.0}, 5.0, (0.0, 1.0)) if mode == "guided" else None
    batch = BatchState(family, shape, reward)
    batch.add([SampleSpec(f"a red circle moving left {row}", seed=row, guidance=guidance) for row in range(rows)],
              STEPS, list(range(rows)))
    batch.step()
    return batch


def _step_ms(batch) -> float:
    import torch

    cuda = batch.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(batch.device)
    start = time.perf_counter()
    batch.step()
    if cuda:
        torch.cuda.synchronize(batch.device)
    return (time.perf_counter() - start) * 1e3


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.gpu_check import _versions
    from guidance.compilation import check_backend, compile_model, compile_monitor, warm_up
    from guidance.precision import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cold_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile-bench-inductor-")
    load_start = os.getloadavg()
    check_backend(args.backend, resolve_device(args.device))
    family, reward, shape = _load(args)
    blocks = compile_model(family, reward, args.backend)
    warmed = warm_up(family, reward, shape, STEPS, max(args.batches))
    compiled = _compiled_blocks(family, reward)
    before = compile_monitor().counts()
    times: dict[tuple[str, int], dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for mode in args.modes:
            for rows in args.batches:
                with _eager(compiled):
                    eager_batch = _batch(family, reward, shape, rows, mode)
                compiled_batch = _batch(family, reward, shape, rows, mode)
                pair = times.setdefault((mode, rows), {"eager": [], "compiled": []})
                for repeat in range(args.repeats):
                    for variant in ("eager", "compiled") if repeat % 2 == 0 else ("compiled", "eager"):
                        with _eager(compiled) if variant == "eager" else nullcontext():
                            pair[variant].append(_step_ms(eager_batch if variant == "eager" else compiled_batch))
    after = compile_monitor().counts()
    results = [{"mode": mode, "batch": rows, "eager_ms": statistics.median(pair["eager"]),
                "compiled_ms": statistics.median(pair["compiled"]),
                "ratio": statistics.median(e / c for e, c in zip(pair["eager"], pair["compiled"])),
                "eager_steps_ms": pair["eager"], "compiled_steps_ms": pair["compiled"]}
               for (mode, rows), pair in times.items()]
    return {
        "model": args.model, "backend": args.backend, "device": _device_name(family.device),
        "dtype": str(family.dtype).removeprefix("torch."), "shape": [shape.width, shape.height, shape.frames],
        "blocks": blocks, "rounds": args.rounds, "repeats": args.repeats, "steps": STEPS,
        "warmup_s": warmed.seconds, "warmup_compiles": warmed.compiles, "cold_cache": args.cold_cache,
        "recompiles": after.recompiles - before.recompiles, "results": results,
        "torch": torch.__version__, "versions": _versions(), "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "load_start": load_start, "load_end": os.getloadavg(),
    }


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def markdown(result: dict[str, Any], command: str) -> str:
    """The dated section for docs/benchmarks.md."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    model = {"demo": "the embedded demo model", "wan1.3b": "Wan2.1-T2V-1.3B's architecture, random weights"}.get(
        result["model"], result["model"])
    loaded = max(result["load_start"][0], result["load_end"][0]) > result["cores"]
    lines = [
        f"## `--compile`: one denoising step eager vs compiled, {model}, {when}", "",
        f"Command: `{command}`. Device: {result['device']}, torch {result['torch']}, {result['threads']} torch "
        f"thread{'s' if result['threads'] != 1 else ''}; "
        f"load average {result['load_start'][0]:.1f} at the start and {result['load_end'][0]:.1f} at the end"
        + (" (above the core count: the times are slow, the paired ratios still compare like with like)."
           if loaded else "."), "", *table(result)]
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> list[str]:
    """What was measured, the table and the verdict (also ``benchmarks.gpu_check``'s compile section)."""
    width, height, frames = result["shape"]
    cache = "" if result["backend"] != "inductor" else (
        ", empty inductor cache" if result["cold_cache"] else ", inductor cache as found")
    lines = [
        f"{width}x{height}, {frames} frames, {result['dtype']}, backend {result['backend']}; a `BatchState.step()` "
        "with CFG on (two denoiser calls and the fused step); guided: every row's reward gradient through the "
        f"compiled trunk. Medians of {result['rounds']} rounds x {result['repeats']} steps of each, eager and "
        "compiled stepped in turn; the ratio is the median of the paired steps' eager / compiled. "
        f"{result['blocks']} blocks compiled; warm-up {result['warmup_s']:.1f} s ({result['warmup_compiles']} "
        f"compilations{cache}); recompiles during the rounds: {result['recompiles']}.",
        "", "| step | B | eager ms | compiled ms | eager / compiled |", "|---|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| {r['mode']} | {r['batch']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | "
                     f"{r['ratio']:.2f} |")
    met = all(r["ratio"] >= TARGET for r in result["results"]) and result["recompiles"] == 0
    return lines + ["", f"Target (>= {TARGET}x per step at every batch size, no recompile after the warm-up): "
                        f"{'met' if met else 'missed'}."]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    command = "python -m benchmarks.compile_bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    text = markdown(result, command.strip())
    print(text)
    if args.output_file is not None:
        args.output_file.write_text(json.dumps(result, indent=2) + "\n")
    if args.benchmarks is not None:
        with args.benchmarks.open("a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
