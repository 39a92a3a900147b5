"""Benchmark the guided step: ``python -m benchmarks.kernel_bench [--batch 1 4] [--dtype bf16] [--json PATH]``.

The step is memory-bound, so the figure that matters is achieved bandwidth, compared with the
practical limit of the device (a plain device-to-device copy of the same number of bytes), with the
eager PyTorch reference and with ``torch.compile`` of the reference. Times are CUDA-event medians.
Without a CUDA GPU only the reference runs, on CPU, on a smaller default shape: those figures say
how fast the CPU fallback is, nothing about the kernel. GPU results belong in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from kernels._guided_step_common import GuidedStepStats, prepare_inputs
from kernels.guided_step_reference import guided_step_reference

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Latents of one sample of a Wan-style 480p video model: [channels, frames, height, width].
GPU_SHAPE = (16, 21, 60, 104)
#: Same channels and frames, height and width / 4, so the CPU reference finishes in seconds.
CPU_SHAPE = (16, 21, 15, 26)

Step = Callable[[], object]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to run (default: 1 4)")
    parser.add_argument("--objectives", type=int, default=3, help="K, the number of reward objectives (default: 3)")
    parser.add_argument(
        "--shape", type=int, nargs="+", default=None,
        help=f"per-sample latent shape (default: {' '.join(map(str, GPU_SHAPE))} on GPU, "
        f"{' '.join(map(str, CPU_SHAPE))} on CPU)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="storage dtype (default: bf16)")
    parser.add_argument("--mode", choices=["relative", "sum", "unit"], default="relative",
                        help="guidance mode (default: relative, the server's default)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default: 100 on GPU, 20 on CPU)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed iterations first (default: 10 on GPU, 3 on CPU)"
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if min(args.batch) < 1 or args.objectives < 1 or (args.shape is not None and min(args.shape) < 1):
        parser.error("--batch, --objectives and --shape need positive integers")
    if (args.iters is not None and args.iters < 1) or (args.warmup is not None and args.warmup < 0):
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def default(value: int | None, fallback: int) -> int:
    """``value`` if given on the command line, else the device-specific default."""
    return fallback if value is None else value


def make_inputs(batch: int, num_obj: int, shape: Sequence[int], dtype: torch.dtype, device: str, mode: str) -> dict:
    """A guided step with CFG on and x given, every sample guided with its own settings."""
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen, device=device)

    return dict(
        pred_cond=rand(batch, *shape).to(dtype),
        pred_uncond=rand(batch, *shape).to(dtype),
        grads=rand(batch, num_obj, *shape).to(dtype),
        x=rand(batch, *shape).to(dtype),
        weights=rand(batch, num_obj).abs() + 0.1,
        coef=torch.linspace(0.5, 2.0, batch, device=device),
        cfg_scale=torch.full((batch,), 5.0, device=device),
        dt=torch.full((batch,), -0.02, device=device),
        mode=mode,
    )


def bytes_moved(batch: int, num_obj: int, numel: int, dtype: torch.dtype, mode: str) -> tuple[int, str]:
    """The algorithmic traffic of one step, and how it was counted (printed with the results)."""
    normed = mode in ("unit", "relative")
    tensors = 3 + num_obj + 1 + (num_obj if normed else 0) + (2 if mode == "relative" else 0)
    how = (
        f"bytes = {tensors} x B x N x {dtype.itemsize}: reads of x, pred_cond, pred_uncond and the K={num_obj} "
        "gradients, the write of the output"
        + (f", and pass 1 re-reading the K gradients for their norms (mode {mode})" if normed else "")
        + (" and pred_cond, pred_uncond for the reference RMS" if mode == "relative" else "")
        + "; the [B, K] and [B, K, chunks] float32 side buffers are ignored"
    )
    return tensors * batch * numel * dtype.itemsize, how


def time_cuda(step: Step, iters: int, warmup: int) -> float:
    """Median milliseconds per call, each call bracketed by CUDA events."""
    for _ in range(warmup):
        step()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in pairs:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in pairs)


def time_cpu(step: Step, iters: int, warmup: int) -> float:
    """Median milliseconds per call on the host clock."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def reference(**inputs: torch.Tensor | str) -> tuple[torch.Tensor, GuidedStepStats]:
    """The PyTorch reference with its argument checks, as ``guided_step`` runs it on a CPU."""
    return guided_step_reference(prepare_inputs(**inputs))


def run_gpu(args: argparse.Namespace, shape: tuple[int, ...], numel: int, dtype: torch.dtype) -> list[dict]:
    """Fused kernels, device copy, eager and compiled reference for each batch size."""
    from kernels.guided_step_triton import guided_step_triton

    iters, warmup = default(args.iters, 100), default(args.warmup, 10)
    compiled_reference = torch.compile(reference)
    rows = []
    for batch in args.batch:
        inputs = make_inputs(batch, args.objectives, shape, dtype, "cuda", args.mode)
        nbytes, _ = bytes_moved(batch, args.objectives, numel, dtype, args.mode)
        # Copying a buffer of nbytes / 2 reads and writes nbytes in all.
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        fused_out, _ = guided_step_triton(prepare_inputs(**inputs))
        eager_out, _ = reference(**inputs)
        max_err = (fused_out.float() - eager_out.float()).abs().max().item()
        ms = {
            "fused": time_cuda(lambda: guided_step_triton(prepare_inputs(**inputs)), iters, warmup),
            "copy": time_cuda(lambda: dst.copy_(src), iters, warmup),
            "eager": time_cuda(lambda: reference(**inputs), iters, warmup),
        }
        try:
            ms["compiled"] = time_cuda(lambda: compiled_reference(**inputs), iters, warmup)
        except Exception as error:  # a compile failure should not cost the other figures
            print(f"torch.compile of the reference failed for B={batch}: {error!r}")
        rows.append(dict(
            batch=batch, bytes=nbytes, max_abs_err_vs_eager=max_err,
            **{f"{name}_ms": t for name, t in ms.items()},
            **{f"{name}_gbps": nbytes / (t * 1e-3) / 1e9 for name, t in ms.items()},
        ))
        del inputs, src, dst, fused_out, eager_out
        torch.cuda.empty_cache()
    return rows


def print_gpu(rows: list[dict]) -> None:
    print(f"{'B':>3}  {'impl':<20}{'ms':>10}{'GB/s':>10}{'% copy BW':>11}")
    for row in rows:
        for name, label in (("fused", "fused (triton)"), ("copy", "device copy"), ("eager", "eager reference"),
                            ("compiled", "compiled reference")):
            if f"{name}_ms" in row:
                ms, gbps = row[f"{name}_ms"], row[f"{name}_gbps"]
                print(f"{row['batch']:>3}  {label:<20}{ms:>10.3f}{gbps:>10.1f}{100 * gbps / row['copy_gbps']:>10.1f}%")
        ratios = [f"fused at {100 * row['fused_gbps'] / row['copy_gbps']:.1f}% of copy bandwidth",
                  f"{row['eager_ms'] / row['fused_ms']:.2f}x faster than eager"]
        if "compiled_ms" in row:
            ratios.append(f"{row['compiled_ms'] / row['fused_ms']:.2f}x faster than compiled")
        print(f"{row['batch']:>3}  " + ", ".join(ratios) + f"; max |fused - eager| = {row['max_abs_err_vs_eager']:.3g}")


def run_cpu(args: argparse.Namespace, shape: tuple[int, ...], numel: int, dtype: torch.dtype) -> list[dict]:
    """The reference on CPU only: the fallback's speed, not a kernel figure."""
    iters, warmup = default(args.iters, 20), default(args.warmup, 3)
    rows = []
    for batch in args.batch:
        inputs = make_inputs(batch, args.objectives, shape, dtype, "cpu", args.mode)
        nbytes, _ = bytes_moved(batch, args.objectives, numel, dtype, args.mode)
        ms = time_cpu(lambda: reference(**inputs), iters, warmup)
        rows.append(dict(batch=batch, bytes=nbytes, cpu_reference_ms=ms, cpu_reference_gbps=nbytes / (ms * 1e-3) / 1e9))
    return rows


def print_cpu(rows: list[dict]) -> None:
    print(f"{'B':>3}  {'impl':<24}{'ms':>10}{'GB/s':>10}")
    for row in rows:
        ms, gbps = row["cpu_reference_ms"], row["cpu_reference_gbps"]
        print(f"{row['batch']:>3}  {'reference (CPU)':<24}{ms:>10.2f}{gbps:>10.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    on_gpu = torch.cuda.is_available()
    shape = tuple(args.shape) if args.shape else (GPU_SHAPE if on_gpu else CPU_SHAPE)
    device_name = torch.cuda.get_device_name() if on_gpu else "cpu"
    numel = math.prod(shape)
    _, how = bytes_moved(1, args.objectives, numel, dtype, args.mode)
    if not on_gpu:
        print("No CUDA GPU available: timing only the PyTorch reference on CPU. These are CPU reference "
              "figures, not kernel figures.")
    print(f"guided step: per-sample shape {list(shape)} (N = {numel}), K = {args.objectives}, {args.dtype}, "
          f"CFG on, x given, mode {args.mode}, device {device_name}")
    print(how)
    if on_gpu:
        rows = run_gpu(args, shape, numel, dtype)
        print_gpu(rows)
    else:
        rows = run_cpu(args, shape, numel, dtype)
        print_cpu(rows)
    if args.json:
        report = dict(device=device_name, shape=list(shape), objectives=args.objectives, dtype=args.dtype,
                      mode=args.mode, bytes_counting=how, torch=torch.__version__, results=rows)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
