"""Benchmarks, kept out of the runtime packages: run them from the repository root or an editable install.

- ``python -m benchmarks.kernel_bench``: the fused guided step against a device copy, eager and compiled torch.
- ``python -m benchmarks.bench_vs_diffusers``: the server's throughput against plain diffusers ``pipe()``.
- ``bash benchmarks/gpu_check.sh`` (``python -m benchmarks.gpu_check``): the GPU figures of docs/benchmarks.md
  in one run of under 10 minutes; ``--dry-run`` does the same at tiny shapes on CPU.
"""
