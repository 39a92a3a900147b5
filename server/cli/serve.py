"""``nrg serve``: the HTTP video-jobs server. Every flag also reads ``NRG_<FLAG>`` (lists comma-separated)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from guidance.attention_backends import ATTENTION_BACKENDS, DEFAULT_BACKEND
from server.cli.common import DTYPES, non_negative, step_cache_threshold
from server.config import COMPILE_BACKENDS, ServerConfig
from server.roles import ROLES
from server.scheduling import BATCHING_MODES
from server.schema import Limits
from server.webhooks.settings import (
    DEFAULT_BACKOFF_S,
    DEFAULT_TIMEOUT_S,
    WebhookSettings,
)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"NRG_{name}", default)


def _env_list(name: str, separator: str = ",") -> list[str]:
    return [item.strip() for item in (_env(name) or "").split(separator) if item.strip()]


def _env_flag(name: str, default: bool) -> bool:
    """A switch's ``NRG_*`` variable: set and not ``0`` or ``false`` turns it on."""
    value = _env(name)
    return default if value is None else value not in ("", "0", "false")


def _env_compile(default: str | None) -> str | None:
    """``NRG_COMPILE``: a backend, or ``1`` / ``true`` for inductor; empty, ``0`` or ``false``: off."""
    value = _env("COMPILE")
    if value is None:
        return default
    value = value.strip()
    if value.lower() in ("", "0", "false"):
        return None
    return "inductor" if value.lower() in ("1", "true") else value


def _budget_flag(gib: float | None) -> str:
    """``ServerConfig.memory_budget_gib`` as ``--memory-budget`` spells it (None: ``auto``)."""
    return "auto" if gib is None else f"{gib:g}"


class _AppendReplacingDefault(argparse.Action):
    """``action="append"`` whose first use replaces the default (the ``NRG_*`` list) instead of
    extending it: a flag overrides its environment variable, it never merges with it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest)
        items = [] if current is self.default else list(current)
        setattr(namespace, self.dest, [*items, values])


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not days >= 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"retention must be a number of days >= 0 (0: keep forever); got {text!r}")
    return days


def _positive_seconds(what: str):
    """An argparse type: a finite number of seconds > 0, the error naming ``what``."""

    def parse(text: str) -> float:
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds > 0; got {text!r}")
        return seconds

    return parse


def _wait_list(text: str) -> tuple[float, ...]:
    """``--webhook-backoff``: comma-separated seconds (empty: a single attempt)."""
    try:
        waits = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        waits = (float("nan"),)
    if any(not 0 <= wait < float("inf") for wait in waits):
        raise argparse.ArgumentTypeError(f"backoff must be comma-separated seconds >= 0, e.g. 10,60,300; got {text!r}")
    return waits


def _waits(text: str) -> str:
    """``--webhook-backoff`` checked, kept as text (``nrg ray`` forwards it to its replicas as given)."""
    return ",".join(f"{wait:g}" for wait in _wait_list(text))


def _memory_budget(text: str) -> float | None:
    """GiB (0: no limit), or None for ``auto``."""
    if text == "auto":
        return None
    return non_negative(text, "memory budget must be auto or a number of GiB >= 0 (0: no limit)")


def _step_slowdown(text: str) -> float | None:
    """``--max-step-slowdown``: a factor >= 1, or 0 for off (None)."""
    value = non_negative(text, "max step slowdown must be a factor >= 1, or 0 for off")
    if value == 0:
        return None
    if value < 1:
        raise argparse.ArgumentTypeError(f"max step slowdown must be a factor >= 1, or 0 for off; got {text!r}")
    return value


def _threads(text: str) -> int:
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise argparse.ArgumentTypeError(f"threads must be an integer >= 1; got {text!r}")
    return threads


def set_threads(threads: int | str | None) -> None:
    """``--threads``: torch's intra-op threads, and one inter-op thread; ``None`` leaves torch's defaults."""
    if threads is None or threads == "":
        return
    import torch

    try:
        count = _threads(str(threads))  # NRG_THREADS is not checked by argparse
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"--{exc}") from None
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work already started in this process (e.g. run in-process by a test)
        pass


def add_parser(sub) -> None:
    serve = sub.add_parser("serve", help="run the HTTP video-jobs server",
                           description="Every flag can also be set by the environment variable NRG_<FLAG> "
                                       "(e.g. NRG_PORT, NRG_MODEL=a=/m/a,b=/m/b, NRG_API_KEYS=k1,k2).")
    add_serve_flags(serve, default_role=_env("ROLE", ServerConfig.role))
    worker = sub.add_parser("worker", help="run a worker of a scaled-out deployment (nrg serve --role worker)",
                            description="The same flags as `nrg serve`, with --role worker: the engine claims "
                                        "jobs of its --model(s) from the shared --store postgresql://...")
    add_serve_flags(worker, default_role="worker")


def add_serve_flags(serve: argparse.ArgumentParser, default_role: str) -> None:
    """The flags of ``nrg serve`` on ``serve``: ``nrg serve`` and ``nrg worker`` have them, ``nrg ray``
    forwards them, and each Ray replica parses them again (``server.ray_app``). Each default is the
    ``NRG_*`` variable's value, else the field's of :class:`ServerConfig` or :class:`Limits`."""
    defaults = ServerConfig()
    limits = defaults.limits
    listed = _AppendReplacingDefault
    serve.add_argument("--model", action=listed, default=_env_list("MODEL"), metavar="[NAME=]DIR",
                       help="pipeline directory, repeatable (default: the embedded demo model as 'nrg-demo')")
    serve.add_argument("--reward", action=listed, default=_env_list("REWARD"), metavar="[MODEL=]DIR",
                       help="reward model directory for a model (default: the first model)")
    serve.add_argument("--checkpoint", action=listed, default=_env_list("CHECKPOINT"),
                       metavar="[MODEL/]NAME=DIR", help="aligned checkpoint (LoRA or full weights), repeatable")
    serve.add_argument("--judge", action=listed, default=_env_list("JUDGE", ";"), metavar="NAME=SPEC",
                       help="held-out judge scoring every finished video, repeatable: NAME=classic, NAME=clip:DIR, "
                            "NAME=videoreward:DIR or NAME=package.module:factory (docs/judges.md; NRG_JUDGE "
                            "separates judges with ';')")
    serve.add_argument("--host", default=_env("HOST", defaults.host))
    serve.add_argument("--port", type=int, default=int(_env("PORT", str(defaults.port))))
    serve.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", str(defaults.data_dir))))
    serve.add_argument("--max-batch", type=int, default=int(_env("MAX_BATCH", str(defaults.max_batch))))
    serve.add_argument("--batch-wait-ms", type=float, default=float(_env("BATCH_WAIT_MS", str(defaults.batch_wait_ms))))
    serve.add_argument("--batching", choices=BATCHING_MODES, default=_env("BATCHING", defaults.batching),
                       help="continuous: jobs join a running batch at the next step and take the slots of finished "
                            "ones; static: a batch is fixed when it starts (waiting --batch-wait-ms to fill) "
                            "(default %(default)s)")
    serve.add_argument("--max-step-slowdown", type=_step_slowdown, metavar="FACTOR",
                       default=_step_slowdown(_env("MAX_STEP_SLOWDOWN", str(defaults.max_step_slowdown or 0))),
                       help="continuous batching: a queued job joins the running batch only while the batch's "
                            "predicted step time stays within FACTOR times one row's alone, both learnt online per "
                            "model and shape (e.g. 2; docs/server.md, Making it fast; default 0: joins bounded by "
                            "rows only)")
    serve.add_argument("--max-queue", type=int, default=int(_env("MAX_QUEUE", str(defaults.max_queue))))
    serve.add_argument("--api-key", action=listed, dest="api_keys", default=_env_list("API_KEYS"),
                       help="accepted bearer key, repeatable (default: no auth)")
    serve.add_argument("--admin-key", default=_env("ADMIN_KEY", defaults.admin_key), metavar="KEY",
                       help="the operator's bearer key: it sees every key's jobs, which other keys never do "
                            "(default: none)")
    serve.add_argument("--allowed-host", action=listed, dest="allowed_hosts", default=_env_list("ALLOWED_HOSTS"),
                       metavar="NAME", help="Host name to answer besides IP addresses, localhost and --host, "
                                            "repeatable; '*' answers any (default: none)")
    serve.add_argument("--cors-origin", action=listed, dest="cors_origins", default=_env_list("CORS_ORIGINS"),
                       metavar="ORIGIN", help="origin (scheme://host[:port]) allowed cross-origin requests, "
                                              "repeatable; '*' allows any (default: none)")
    serve.add_argument("--retention", type=_days, default=_env("RETENTION_DAYS", str(defaults.retention_days)),
                       metavar="DAYS", help="days a finished job's files are kept; 0 keeps them forever "
                                            f"(default {defaults.retention_days:g})")
    serve.add_argument("--device", default=_env("DEVICE", defaults.device))
    serve.add_argument("--dtype", choices=DTYPES, default=_env("DTYPE", defaults.dtype),
                       help="weights dtype; auto: bfloat16 on CUDA and float32 elsewhere (default %(default)s)")
    serve.add_argument("--memory-budget", type=_memory_budget, metavar="GIB",
                       default=_env("MEMORY_BUDGET", _budget_flag(defaults.memory_budget_gib)),
                       help="device memory the batches may use by the admission estimate (docs/server.md, Memory); "
                            "a batch takes no more rows than fit. auto: 90%% of the GPU's memory on CUDA, no limit "
                            "on the CPU; 0: no limit (default %(default)s)")
    serve.add_argument("--vae-tiling", action="store_true", default=_env_flag("VAE_TILING", defaults.vae_tiling),
                       help="the VAEs decode in overlapping spatial tiles, one sample at a time (diffusers' tiling "
                            "and slicing): long, large clips decode within memory, with blended tile seams; clips "
                            "within one tile (256x256 on Wan) are unchanged (docs/server.md, Memory; default off)")
    serve.add_argument("--offload-encoders", action="store_true",
                       default=_env_flag("OFFLOAD_ENCODERS", defaults.offload_encoders),
                       help="keep the text and image encoders in host memory and run them a layer at a time on the "
                            "device (diffusers' group offloading): frees their weights' memory for rows, for a copy "
                            "of the encoder per request (docs/server.md, Memory; default off)")
    serve.add_argument("--batch-invariant", action="store_true",
                       default=_env_flag("BATCH_INVARIANT", defaults.batch_invariant),
                       help="one row per model call: a job's video is the same bit for bit alone or in any batch "
                            "on one machine, at the cost of batching (docs/server.md, Reproducibility)")
    serve.add_argument("--compile", dest="compile_backend", nargs="?", const="inductor", choices=COMPILE_BACKENDS,
                       default=_env_compile(defaults.compile_backend), metavar="BACKEND",
                       help="torch.compile the transformer blocks of the denoisers and the reward trunk, and run them "
                            "at every batch size up to --max-batch before taking jobs (minutes); BACKEND inductor (the "
                            "default when the flag is given) needs a C++ compiler on the CPU and Triton on CUDA; "
                            "aot_eager and eager only trace (docs/server.md, Making it fast; default: off)")
    serve.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, metavar="NAME",
                       default=_env("ATTENTION_BACKEND", defaults.attention_backend),
                       help=f"the denoisers' attention kernel, through diffusers' dispatcher: one of "
                            f"{', '.join(ATTENTION_BACKENDS)}; a CPU runs PyTorch's own (native, _native_math, "
                            f"_native_flash, flex), flash/sage/xformers need their package and CUDA; checked before "
                            f"any model loads (docs/server.md, Making it fast; default {DEFAULT_BACKEND})")
    serve.add_argument("--step-cache", dest="step_cache_threshold", type=step_cache_threshold, metavar="THRESHOLD",
                       default=step_cache_threshold(_env("STEP_CACHE", str(defaults.step_cache_threshold))),
                       help="first-block caching of every job's rows on Wan models: a row's denoiser call runs only "
                            "its first block when that block's residual moved by less than THRESHOLD (e.g. 0.05) "
                            "since the row's last full call, reusing the rest; each row decides alone. Not with "
                            "--compile (docs/server.md, Making it fast; default 0: off)")
    serve.add_argument("--shutdown-grace", type=float, metavar="SECONDS",
                       default=float(_env("SHUTDOWN_GRACE", str(defaults.shutdown_grace_s))),
                       help=f"after SIGTERM, how long the running jobs may take to finish (default "
                            f"{defaults.shutdown_grace_s:g})")
    serve.add_argument("--log-format", choices=("text", "json"), default=_env("LOG_FORMAT", "text"),
                       help="log lines for people (text, the default) or one JSON object per line (json)")
    serve.add_argument("--allow-empty-store", action="store_true",
                       default=_env_flag("ALLOW_EMPTY_STORE", defaults.allow_empty_store),
                       help="start even though the job store is missing or empty while DATA_DIR/videos holds files")
    serve.add_argument("--store", default=_env("STORE", defaults.store_url), metavar="URL",
                       help="job store: omitted for SQLite in --data-dir (one process); postgresql://USER@HOST:PORT/DB "
                            "for a store shared by several API and worker processes (docs/server.md, Scale-out)")
    serve.add_argument("--role", choices=ROLES, default=default_role,
                       help="all: HTTP and the engine in one process; api: HTTP only; worker: the engine "
                            "(api and worker need a postgresql:// --store; default %(default)s)")
    serve.add_argument("--lease-s", type=_positive_seconds("lease"),
                       default=_env("LEASE_S", str(defaults.lease_s)), metavar="SECONDS",
                       help="how long a worker's claim on a job lasts without a heartbeat; then another worker re-runs "
                            f"it (default {defaults.lease_s:g})")
    serve.add_argument("--worker-id", default=_env("WORKER_ID", defaults.worker_id), metavar="NAME",
                       help="this worker's name in the store (default HOST-PID); a restart under the same name re-queues "
                            "the jobs it left running at once instead of after their lease")
    serve.add_argument("--webhook-allow", action=listed, default=_env_list("WEBHOOK_ALLOW"), metavar="PATTERN",
                       help="where jobs' webhook_url may point, repeatable: [http://]HOST[:PORT], HOST a name, "
                            "*.DOMAIN, an IP address or *, PORT a number or * (default port of the scheme if none); "
                            "https only unless the pattern starts with http://; private addresses only where a "
                            "pattern names them (default: none, webhooks off; docs/server.md, Webhooks)")
    serve.add_argument("--webhook-secret", default=_env("WEBHOOK_SECRET"), metavar="SECRET",
                       help="key that signs webhooks (Standard Webhooks): whsec_BASE64 or raw text of 16+ bytes; "
                            "needed with --webhook-allow")
    serve.add_argument("--webhook-backoff", type=_waits, metavar="SECONDS,...",
                       default=_env("WEBHOOK_BACKOFF", ",".join(f"{w:g}" for w in DEFAULT_BACKOFF_S)),
                       help="waits between a webhook's attempts, so one attempt more than waits "
                            "(default %(default)s: 6 attempts over about an hour)")
    serve.add_argument("--webhook-timeout", type=_positive_seconds("timeout"),
                       default=_env("WEBHOOK_TIMEOUT", f"{DEFAULT_TIMEOUT_S:g}"), metavar="SECONDS", help="connect and read timeout of each webhook attempt (default %(default)s)")
    serve.add_argument("--threads", type=_threads, default=_env("THREADS"), metavar="N",
                       help="torch intra-op threads (torch.set_num_threads; inter-op threads 1), set before the "
                            "models load: several processes on one machine then do not fight for cores (default: "
                            "torch's, one per core)")
    for name in fields(Limits):
        flag = name.name.replace("_", "-")
        kind = type(getattr(limits, name.name))
        serve.add_argument(f"--{flag}", type=kind, default=kind(_env(name.name.upper(), str(getattr(limits, name.name)))),
                           help=f"request limit (default {getattr(limits, name.name)})")


def _named(items: list[str], default_name: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        out[name if sep else default_name] = Path(path)
    return out


def server_config(args: argparse.Namespace):
    """The :class:`server.config.ServerConfig` of parsed ``nrg serve`` arguments."""
    from server.config import DEMO_JUDGES, DEMO_MODEL_NAME, ServerConfig
    from server.judging import parse_judge_flags

    models = {}
    for item in args.model:
        name, sep, path = item.rpartition("=")
        models[name if sep else Path(path).name] = Path(path)
    first = next(iter(models), DEMO_MODEL_NAME)
    checkpoints: dict[str, dict[str, Path]] = {}
    for item in args.checkpoint:
        target, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--checkpoint expects [MODEL/]NAME=DIR; got {item!r}")
        model, slash, name = target.rpartition("/")
        checkpoints.setdefault(model if slash else first, {})[name] = Path(path)
    return ServerConfig(
        models=models, rewards=_named(args.reward, first), checkpoints=checkpoints,
        judges=parse_judge_flags(args.judge) or ({} if models else dict(DEMO_JUDGES)),
        host=args.host, port=args.port, data_dir=args.data_dir, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, batching=args.batching,
        max_step_slowdown=args.max_step_slowdown, max_queue=args.max_queue, api_keys=tuple(args.api_keys),
        device=args.device, dtype=args.dtype, memory_budget_gib=args.memory_budget,
        batch_invariant=args.batch_invariant, vae_tiling=args.vae_tiling,
        offload_encoders=args.offload_encoders, compile_backend=args.compile_backend,
        attention_backend=args.attention_backend, step_cache_threshold=args.step_cache_threshold,
        limits=Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}),
        shutdown_grace_s=args.shutdown_grace, allow_empty_store=args.allow_empty_store,
        allowed_hosts=tuple(args.allowed_hosts), cors_origins=tuple(args.cors_origins), retention_days=args.retention,
        store_url=args.store or None, role=args.role, lease_s=float(args.lease_s), worker_id=args.worker_id or None,
        admin_key=args.admin_key or None,
        webhooks=WebhookSettings(allow=tuple(args.webhook_allow), secret=args.webhook_secret or None,
                                 backoff_s=_wait_list(args.webhook_backoff), timeout_s=float(args.webhook_timeout)),
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from server import listen, log_format, serving
    from server.app import create_app
    from server.config import load_models
    from server.store.integrity import check_data_dir

    set_threads(getattr(args, "threads", None))  # before any model loads
    config = server_config(args)
    if config.role not in ROLES:  # NRG_ROLE is not checked by argparse
        raise ValueError(f"--role must be one of {', '.join(ROLES)}; got {config.role!r}")
    if config.compile_backend not in (None, *COMPILE_BACKENDS):  # NRG_COMPILE is not checked by argparse
        raise ValueError(f"--compile must be one of {', '.join(COMPILE_BACKENDS)}; got {config.compile_backend!r}")
    # Before minutes of model loading: a bad --store, an unreachable one, a damaged SQLite file.
    if config.store_url is None:
        if config.role != "all":
            raise ValueError(f"--role {config.role} needs a store the processes share: --store postgresql://...")
        check_data_dir(args.data_dir, args.allow_empty_store)
    else:
        from server.store import open_store

        open_store(config.store_url, config.data_dir).close()  # checks the URL, connects, migrates
    if args.log_format not in log_format.FORMATS:  # NRG_LOG_FORMAT is not checked by argparse
        raise ValueError(f"--log-format must be one of {', '.join(log_format.FORMATS)}; got {args.log_format!r}")
    sock = listen.bind(config.host, config.port)  # a busy port fails now, in one line, not after loading
    log_format.configure(args.log_format)
    app = create_app(config, load_models(config))
    runtime = app.state.runtime
    if not config.allowed_hosts:
        logging.getLogger("nrg.server").info(
            "answering Host headers that are IP addresses, localhost or %s; list any other name clients use "
            "with --allowed-host (NRG_ALLOWED_HOSTS)", config.host)
    url = f"http://{config.host}:{config.port}"
    role = "" if config.role == "all" else f" as {config.role} {runtime.worker_id if config.role == 'worker' else ''}"
    print(f"nrg-serve{role.rstrip()} on {url} (models: {', '.join(runtime.engine.models)}); playground {url}/, "
          f"API docs {url}/docs", flush=True)
    status = serving.run(app, config.host, config.port, sock=sock, log_config=None)
    if not runtime.engine.finished:
        # The grace ran out mid-batch (the store re-queues that batch at the next start). Interpreter
        # teardown under a thread still inside torch aborts the process, so leave without it.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(status)
    return status
