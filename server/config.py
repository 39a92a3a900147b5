"""Server settings (``nrg serve`` flags and their ``NRG_*`` environment variables) and model loading.

:class:`ServerConfig` is the one place a setting's default lives: the command line
(``server.cli.serve``) reads its flags' defaults and help from it, and the engine (``server.engine``)
the defaults of its settings. ``nrg serve --help`` imports this module, so it imports no torch;
:func:`load_models` imports the libraries it loads with when it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from server.scheduling import BatchingMode
from server.schema import Limits
from server.store import DEFAULT_LEASE_S
from server.webhooks.settings import WebhookSettings

if TYPE_CHECKING:
    from server.hosted_model import HostedModel

log = logging.getLogger("nrg.server")

DEMO_MODEL_NAME = "nrg-demo"
#: The judges ``nrg serve`` loads for the embedded demo when given no ``--judge``: the demo world's
#: ground truth measured from the pixels, and the weight-free classic measures.
DEMO_JUDGES = {"truth": "demo_world.judge:ground_truth", "classic": "classic"}
#: ``--compile`` backends: inductor generates code (the speed-up); aot_eager and eager only trace, to check
#: that a model compiles without paying for code generation.
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
#: Waits of the worker between attempts while storage faults persist (about a minute in all); when a
#: fault outlasts them the worker gives up and the process exits for its supervisor to restart it.
FAULT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass(frozen=True)
class ServerConfig:
    """Everything one ``nrg serve`` process is told; each field's default is the flag's."""

    #: model name -> local diffusers directory; empty means the embedded demo model.
    models: dict[str, Path] = field(default_factory=dict)
    #: model name -> reward model directory.
    rewards: dict[str, Path] = field(default_factory=dict)
    #: judge name -> spec (``guidance.judges.load_judge``): held-out scorers of every finished video.
    judges: dict[str, str] = field(default_factory=dict)
    #: model name -> {checkpoint name -> directory}.
    checkpoints: dict[str, dict[str, Path]] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    max_batch: int = 4
    batch_wait_ms: float = 50.0
    #: ``continuous``: jobs join a running batch between steps; ``static``: a batch is fixed at its start.
    batching: BatchingMode = "continuous"
    #: Continuous batching: a queued job joins a running batch only while the batch's predicted step time
    #: stays within this many times one row's alone, both learnt online per model and shape
    #: (``server.step_costs``); None: joins are bounded by rows (``max_batch``, memory) only.
    max_step_slowdown: float | None = None
    max_queue: int = 64
    api_keys: tuple[str, ...] = ()
    #: The operator's key: it sees every tenant's jobs (server.tenancy); None: no operator key.
    admin_key: str | None = None
    device: str | None = None
    #: ``auto``: bfloat16 on CUDA, float32 elsewhere (``guidance.precision``).
    dtype: str = "auto"
    #: Device memory batches may use by the admission estimate, in GiB: None for auto (90% of the GPU's
    #: memory on CUDA, no limit on the CPU), 0 for no limit.
    memory_budget_gib: float | None = None
    #: One row per denoiser call, so a job's video does not depend on what shares its batch (bit for bit on
    #: one machine), at the cost of batching the denoiser (docs/server.md, Reproducibility).
    batch_invariant: bool = False
    #: ``torch.compile`` backend of the denoisers' and the reward trunk's blocks (``guidance.compilation``),
    #: warmed up at every batch size before the server takes jobs; None: eager (docs/server.md, Making it fast).
    compile_backend: str | None = None
    #: The denoisers' attention kernel, through diffusers' dispatcher (``guidance.attention_backends``).
    attention_backend: str = "native"
    #: First-block caching of every job's rows (``guidance.step_cache``): a row's denoiser call runs only
    #: its first block when that block's residual moved by less than this fraction since its last full
    #: call; 0: off (docs/server.md, Making it fast).
    step_cache_threshold: float = 0.0
    #: The VAEs decode in spatial tiles, one sample at a time (``PipelineFamily.tile_vae``): large clips'
    #: decodes fit, at the cost of blended tile seams (docs/server.md, Memory).
    vae_tiling: bool = False
    #: The text and image encoders stay in host memory and run a layer at a time on the device
    #: (``PipelineFamily.offload_encoders``): room for rows, for a copy of the encoder per request.
    offload_encoders: bool = False
    limits: Limits = field(default_factory=Limits)
    #: How long a SIGTERM waits for the running batch before exiting (jobs left over stay queued).
    shutdown_grace_s: float = 30.0
    #: Start although the job store is missing or empty while videos/ holds files of earlier jobs.
    allow_empty_store: bool = False
    #: The worker's waits between retries while storage faults persist; beyond them it gives up.
    fault_backoff_s: tuple[float, ...] = FAULT_BACKOFF_S
    #: Host names accepted besides IP literals, localhost and ``host`` ("*": any); see server.origin_policy.
    allowed_hosts: tuple[str, ...] = ()
    #: Origins allowed cross-origin requests (CORS); others may not POST or DELETE.
    cors_origins: tuple[str, ...] = ()
    #: Days a finished job's files are kept; 0 keeps them forever.
    retention_days: float = 7.0
    #: The job store: None for SQLite in ``data_dir``; a ``postgresql://`` URL for a shared store.
    store_url: str | None = None
    #: ``all``: HTTP and the engine in one process; ``api``: HTTP only; ``worker``: the engine (with the ops
    #: routes and /v1/models, no jobs over HTTP).
    role: str = "all"
    #: Seconds a worker's claim lasts without a heartbeat; then another worker re-runs the job.
    lease_s: float = DEFAULT_LEASE_S
    #: This worker's name in the store (default: host-pid); a restart with the same id re-queues its rows at once.
    worker_id: str | None = None
    #: Where jobs' outcomes may be POSTed and how (``--webhook-*``); off unless ``allow`` is given.
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)


def load_models(config: ServerConfig) -> dict[str, HostedModel]:
    """Load every configured pipeline with its reward model and checkpoints (fails fast, clearly)."""
    from guidance import demo
    from guidance.attention_backends import (
        check_attention_backend,
        set_attention_backend,
    )
    from guidance.families import load_pipeline
    from guidance.precision import configure_matmul, resolve_device, resolve_dtype
    from guidance.reward_model import load_reward_model
    from guidance.step_cache import refuse_with_compile
    from server import pipeline_defaults
    from server.hosted_model import HostedModel
    from server.pipeline_defaults import PipelineDefaults
    from server.roles import runs_engine

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    configure_matmul(device)
    compiled = config.compile_backend is not None and runs_engine(config.role)
    check_attention_backend(config.attention_backend, device)  # before minutes of loading
    if compiled:
        from guidance.compilation import check_backend

        check_backend(config.compile_backend, device)  # before minutes of loading
    refuse_with_compile(config.step_cache_threshold, compiled)
    sources = config.models or {DEMO_MODEL_NAME: demo.DEFAULT_MODEL_DIR}
    unknown = (set(config.rewards) | set(config.checkpoints)) - set(sources)
    if unknown:
        raise ValueError(f"reward/checkpoint given for unknown model(s) {sorted(unknown)}; models: {sorted(sources)}")
    hosted = {}
    for name, path in sources.items():
        log.info("loading model %s from %s", name, path)
        family = load_pipeline(path, device=device, dtype=dtype)
        reward_dir = config.rewards.get(name)
        if reward_dir is None and not config.models and demo.DEFAULT_REWARD_DIR.is_dir():
            reward_dir = demo.DEFAULT_REWARD_DIR  # the embedded model's own reward model
        reward = load_reward_model(reward_dir, family) if reward_dir is not None else None
        set_attention_backend(family, config.attention_backend, reward)  # after the reward trunk's copy of the blocks
        if config.vae_tiling:
            family.tile_vae()
        if config.offload_encoders:
            family.offload_encoders()
        registry = None
        embedded = not config.models
        checkpoints = dict(config.checkpoints.get(name, {}))
        if embedded:
            checkpoints = {**demo.embedded_checkpoints(), **checkpoints}  # the demo's aligned LoRAs, e.g. dpo-mq
        if checkpoints:
            from guidance.checkpoints import CheckpointRegistry

            registry = CheckpointRegistry(family, checkpoints)
        defaults = (PipelineDefaults(demo.DEFAULT_SHAPE, demo.DEFAULT_STEPS) if embedded
                    else pipeline_defaults.read(path, family))
        hosted[name] = HostedModel(
            name=name,
            family=family,
            reward=reward,
            checkpoints=registry,
            default_shape=defaults.shape,
            default_steps=defaults.steps,
            step_cache=_step_cache(name, family, config.step_cache_threshold),
        )
        _log_loaded(hosted[name], reward_dir)
    if compiled:
        _compile(hosted, config)
    return hosted


def _step_cache(name: str, family, threshold: float):
    """The model's step cache at the server's threshold (None when off); a model it cannot serve stops
    the start with one line."""
    if threshold <= 0:
        return None
    from guidance.step_cache import StepCache

    try:
        return StepCache(family, threshold)
    except ValueError as exc:
        raise ValueError(f"--step-cache: model {name}: {exc}") from None


def _compile(models: dict[str, HostedModel], config: ServerConfig) -> None:
    """Compile every model and run each compiled graph at every batch size this server's batches can
    have, so the first jobs wait for no compilation; from then on a compilation is a recompile
    (``nrg_recompiles_total``)."""
    from guidance.compilation import compile_model, warm_up
    from guidance.rewards import default_chunk_rows

    for model in models.values():
        blocks = compile_model(model.family, model.reward, config.compile_backend)
        loras = model.checkpoints.multi_lora if model.checkpoints is not None else None
        shape = model.default_shape
        log.info("model %s: compiling %d transformer blocks with %s; warming up", model.name, blocks,
                 config.compile_backend, extra={"model": model.name})
        chunk_rows = default_chunk_rows(model.reward, model.family.device, config.memory_budget_gib is not None)
        done = warm_up(model.family, model.reward, shape, model.default_steps, config.max_batch, loras=loras,
                       batch_invariant=config.batch_invariant, chunk_rows=chunk_rows)
        sizes = f"{done.sizes[0]}..{done.sizes[-1]}" if len(done.sizes) > 1 else str(done.sizes[0])
        log.info("model %s: compile warm-up took %.1f s (%d compilations; batch sizes %s at %dx%dx%d)", model.name,
                 done.seconds, done.compiles, sizes, shape.width, shape.height, shape.frames,
                 extra={"model": model.name, "warmup_s": round(done.seconds, 3), "compiles": done.compiles})


def _log_loaded(model: HostedModel, reward_dir: Path | None) -> None:
    """What a model serves with: its defaults, its reward (objectives, guidance defaults), its checkpoints."""
    shape = model.default_shape
    log.info("model %s: %s family, default %dx%dx%d frames, %d steps", model.name, model.family.name,
             shape.width, shape.height, shape.frames, model.default_steps,
             extra={"model": model.name, "family": model.family.name})
    if model.reward is None:
        log.info("model %s: no reward model, so requests cannot use reward_guidance", model.name)
    else:
        from guidance.nrg import defaults_for

        guidance = defaults_for(model.reward)
        log.info("model %s: reward model %s, objectives %s; guidance defaults: mode %s, strength %g, window %s",
                 model.name, reward_dir, ", ".join(model.reward.objectives), guidance.mode, guidance.strength,
                 list(guidance.window), extra={"model": model.name, "objectives": list(model.reward.objectives)})
    if model.step_cache is not None:
        log.info("model %s: step cache on (first block, threshold %g per row)", model.name, model.step_cache.threshold,
                 extra={"model": model.name, "step_cache_threshold": model.step_cache.threshold})
    for checkpoint in model.checkpoints.describe() if model.checkpoints else []:
        log.info("model %s: checkpoint %s (%s)", model.name, checkpoint["name"], checkpoint["kind"],
                 extra={"model": model.name, "checkpoint": checkpoint["name"]})
