"""``torch.compile`` of the denoiser(s) and the reward trunk (``nrg serve --compile``), and its warm-up.

**What is compiled: each transformer block's ``forward``** (the family's ``block_lists``) in every
denoiser (Wan 2.2's two experts) and in the latent reward model's trunk: regional compilation, as
diffusers recommends for its video transformers, rather than the whole model, because

* the blocks of a list share their code and, with dynamo's inlining of ``nn.Module`` s, take their
  weights as graph inputs: one graph serves every block, so compiling costs one block's time, not N's;
* a block's own hooks run outside its graph: the reward trunk hooks its last block for the length of
  one call (``LatentRewardModel.trunk_tokens``), which inside a graph would recompile at every call;
* the per-row LoRA hooks of the layers inside a block (``guidance.multi_lora``) are traced into its
  graph through ``kernels.lora_batch``'s gathered product, which reads nothing on the host (the eager
  paths' grouping by adapter would break the graph at every LoRA layer);
* the trunk's gradient checkpointing checkpoints blocks: a block's compiled forward is both its forward
  and its recomputation in the reward backward, whose graph is compiled at the first backward.

What stays eager is cheap per step: the patch, time and text embeddings, the rotary tables, the
output projection.

**Batch sizes: no padding, no buckets.** The batch dimension is left to dynamo's automatic dynamic
shapes: the first call with one row compiles a graph for one row (sizes 0 and 1 are always
specialised), the first with two a graph whose batch size is symbolic, which serves every batch of two
rows or more. No row is ever padded, so no padding can change a real row's numbers. Each use of a
block is its own pair of graphs (the denoiser without and with LoRA routing, the trunk without and
with gradients), so :func:`warm_up` runs each at every batch size a server batch can have before the
server takes jobs, and :class:`CompileMonitor` counts any compilation after that as a recompile: a
stall of the running batch that the warm-up should have prevented.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.multi_lora import MultiLora
from guidance.reward_model import LatentRewardModel
from guidance.rewards import RewardFunction, default_chunk_rows, reward_and_gradients

log = logging.getLogger(__name__)

#: Graphs dynamo keeps per compiled code object before it falls back to eager for good (torch's default
#: is 8). A block's code object holds the graphs of all its uses: batch 1 and batch >= 2 of the denoiser
#: without and with LoRA routing, of the trunk without and with gradients, each for text rows and for
#: image rows where the model takes an image (16 at most), and, after a request at a shape the warm-up did
#: not run, the same again with a dynamic token count.
RECOMPILE_LIMIT = 32


def check_backend(backend: str, device: torch.device) -> None:
    """``ValueError`` saying what is missing when ``backend`` cannot compile for ``device`` here,
    before any model loads: inductor generates C++ on the CPU (a C++ compiler) and Triton on CUDA."""
    if not hasattr(torch._dynamo.config, "recompile_limit"):
        raise ValueError(f"--compile needs torch 2.7 or newer (its compile callbacks and recompile limit); this is "
                         f"torch {torch.__version__}")
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(f"--compile: unknown torch.compile backend {backend!r}; use inductor (code generation, the "
                         "speed-up), aot_eager or eager (tracing only, to check a model compiles)")
    if backend != "inductor":
        return
    if device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except RuntimeError:
            raise ValueError("--compile inductor on the CPU needs a C++ compiler (g++ or clang++ on the PATH, or "
                             "set CXX); install one, or serve without --compile") from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ValueError("--compile inductor on CUDA needs Triton for a GPU of compute capability 7.0 or newer "
                             "(pip install triton); serve without --compile otherwise")
    else:
        raise ValueError(f"--compile inductor is supported on cpu and cuda; this server runs on {device.type}: "
                         "serve without --compile, or with --compile aot_eager (no speed-up)")


def compile_model(family: PipelineFamily, reward: RewardFunction | None, backend: str = "inductor") -> int:
    """Compile the blocks of every denoiser of ``family`` and of ``reward``'s trunk (a latent reward
    model; other rewards stay as they are) in place. Returns the blocks compiled now (none twice)."""
    compile_monitor()  # counting from the first compilation on
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    modules = list(family.denoisers)
    if isinstance(reward, LatentRewardModel):
        modules.append(reward.trunk)
    compiled = 0
    for module in modules:
        for name in family.block_lists:
            for block in getattr(module, name, ()):
                if not hasattr(block.forward, "_torchdynamo_orig_callable"):
                    block.forward = torch.compile(block.forward, backend=backend)
                    compiled += 1
    return compiled


@dataclass(frozen=True)
class WarmUp:
    """What :func:`warm_up` did: its wall time, the compilations it caused, the batch sizes it ran."""

    seconds: float
    compiles: int
    sizes: tuple[int, ...]


def warm_up(family: PipelineFamily, reward: RewardFunction | None, shape: VideoShape, steps: int, max_rows: int,
            *, loras: MultiLora | None = None, batch_invariant: bool = False,
            chunk_rows: int | None = None) -> WarmUp:
    """Call every compiled variant as a running batch of up to ``max_rows`` rows at ``shape`` calls it
    (``guidance.batch_state``), so that serving compiles nothing.

    The denoisers without gradients at every batch size from 1 to ``max_rows`` (one row per call with
    ``batch_invariant``), without and with LoRA routing; the reward's gradients as ``reward_and_gradients``
    takes them, ``chunk_rows`` rows at a time; its scores without gradients (search, final rewards) at
    every batch size. ``chunk_rows`` must be what the batches will use (None: ``default_chunk_rows`` for the
    device, as ``BatchState`` picks it): a reward backward over more rows than the warm-up ran is a new
    graph. Inputs are made as a batch makes them (noise, prompt encodings, the schedule's
    timestep dtype), since a graph is reused only for inputs of the dtypes and layout it was made for.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1; got {max_rows}")
    sizes = (1,) if batch_invariant else tuple(range(1, max_rows + 1))
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(reward, family.device)
    monitor = compile_monitor()
    before = monitor.counts().compiles
    start = time.perf_counter()
    with monitor.warming():
        _run_every_variant(family, reward, shape, steps, sizes, loras, chunk_rows)
    return WarmUp(time.perf_counter() - start, monitor.counts().compiles - before, sizes)


def _run_every_variant(family: PipelineFamily, reward: RewardFunction | None, shape: VideoShape, steps: int,
                       sizes: tuple[int, ...], loras: MultiLora | None, chunk_rows: int) -> None:
    device = family.device
    schedule = family.schedule(steps, shape)
    rows = max(sizes)
    latents = family.prepare_latents(shape, [torch.Generator("cpu").manual_seed(row) for row in range(rows)])
    routes = (False, True) if loras is not None and loras.names else (False,)
    with torch.no_grad():
        conds = family.stand_in_conditionings(shape, rows)
        for model in family.denoisers:
            for size in sizes:
                timesteps = torch.full((size,), schedule.timesteps[0], dtype=schedule.timestep_dtype, device=device)
                for routed in routes:
                    with _all_rows_routed(loras, size, device) if routed else nullcontext():
                        for cond in conds:
                            family.predict(model, latents[:size], timesteps, cond.select(list(range(size))), shape)
    if reward is None:
        return
    for size in sizes:
        part, level = latents[:size], torch.full((size,), schedule.noise_levels[0], device=device)
        for cond in conds:
            part_cond = cond.select(list(range(size)))
            if size <= chunk_rows:
                weights = torch.ones(size, len(reward.objectives), device=device)
                reward_and_gradients(reward, part, level, part_cond, shape, weights, "unit", weighted=[[0]] * size,
                                     chunk_rows=chunk_rows)
            with torch.no_grad():
                reward(part.float(), level, part_cond, shape)


def _all_rows_routed(loras: MultiLora, size: int, device: torch.device):
    """Every row to the first adapter: the routed graph, which is the same for any adapters and scales."""
    return loras.routing(torch.zeros(size, dtype=torch.long, device=device),
                         torch.ones(size, dtype=torch.float32, device=device))


@dataclass(frozen=True)
class CompileCounts:
    """Compilations so far: all of them and the seconds they took, and of those the recompiles (after a
    warm-up, outside one)."""

    compiles: int = 0
    seconds: float = 0.0
    recompiles: int = 0
    recompile_seconds: float = 0.0


class CompileMonitor:
    """Counts and times this process's compilations by torch's compile callbacks
    (``torch._dynamo.callback``): one start and one end per compilation of a frame, and per backward
    graph compiled at its first backward. Dynamo's own counters (``torch._dynamo.utils.counters``)
    count graphs, not compilations, and are a test utility; the callbacks are what torch's own
    compile-time monitoring hangs on. After the first warm-up (:meth:`warming`), a compilation outside
    one is a recompile, logged with the way to find its cause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = CompileCounts()
        self._started: float | None = None
        self._warming = 0
        self._warmed = False

    def install(self) -> None:
        from torch._dynamo.callback import on_compile_end, on_compile_start

        on_compile_start(self._start)
        on_compile_end(self._end)

    @contextmanager
    def warming(self) -> Iterator[None]:
        """Compilations within are the warm-up's; after it, any other is a recompile."""
        with self._lock:
            self._warming += 1
        try:
            yield
        finally:
            with self._lock:
                self._warming -= 1
                self._warmed = True

    def counts(self) -> CompileCounts:
        with self._lock:
            return self._counts

    def _start(self, args: object = None) -> None:  # torch before 2.7 passes no arguments
        self._started = time.perf_counter()

    def _end(self, args: object = None) -> None:
        seconds = time.perf_counter() - self._started if self._started is not None else 0.0
        with self._lock:
            late = self._warmed and not self._warming
            c = self._counts
            self._counts = CompileCounts(c.compiles + 1, c.seconds + seconds, c.recompiles + late,
                                         c.recompile_seconds + (seconds if late else 0.0))
        if late:
            log.warning("torch.compile compiled again after the warm-up (compile %s, %.1f s): a stall of the running "
                        "batch; TORCH_LOGS=recompiles names the reason", getattr(args, "compile_id", "?"), seconds)


_monitor: CompileMonitor | None = None
_monitor_lock = threading.Lock()


def compile_monitor() -> CompileMonitor:
    """The process's monitor (compile callbacks are process-wide), installed at the first call."""
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            _monitor = CompileMonitor()
            _monitor.install()
        return _monitor

