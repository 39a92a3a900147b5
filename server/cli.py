"""The ``nrg`` command line: generate videos, build tiny pipelines, initialise and train reward models.

Errors a user can fix (bad flags, unknown objectives, wrong directories) are printed as one line
prefixed ``nrg: error:`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from guidance.nrg import MODES
from server.schema import Limits
from server.scheduling import BATCHING_MODES

DTYPES = ("float32", "bfloat16", "float16")


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 832x480; got {text!r}")
    return int(width), int(height)


def _window(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be T_LO,T_HI, e.g. 0.0,1.0; got {text!r}") from None
    return lo, hi


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="local diffusers pipeline directory (default: embedded demo)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (default: float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nrg", description="Flow-NRG steered text-to-video generation and serving")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one video, optionally with reward guidance")
    _add_model_args(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's)")
    gen.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    gen.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    gen.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--reward", type=Path, default=None, help="reward model directory (from init-reward/train-reward)")
    gen.add_argument("--weights", default=None, help="objective weights, e.g. vq=1,mq=0.5,ta=0")
    gen.add_argument("--strength", type=float, default=None,
                     help="guidance strength (default: the reward model's recommended one)")
    gen.add_argument("--window", type=_window, default=None,
                     help="noise levels t_lo,t_hi to guide (default: the reward model's recommended window)")
    gen.add_argument("--mode", choices=MODES, default=None,
                     help="relative (push sized against the CFG term), sum (the paper's t/(1-t) rule), unit, or the "
                          "gradient-free best_of_n / fk (default: the reward model's recommended one)")
    gen.add_argument("--particles", type=int, default=None, help="copies run by best_of_n and fk (default 4)")
    gen.add_argument("--checkpoint", type=Path, default=None,
                     help="aligned checkpoint directory (LoRA or full weights, as nrg serve --checkpoint takes)")
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--out", type=Path, required=True, help="output .mp4 or .npy")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

    tiny = sub.add_parser("make-tiny", help="write a tiny random pipeline of a family (tests, smoke runs)")
    tiny.add_argument("--family", required=True, choices=("wan", "ltx", "hunyuan", "cogvideox"))
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("out", type=Path)

    _add_serve_parser(sub)

    init = sub.add_parser("init-reward", help="write an untrained latent reward model for a pipeline")
    _add_model_args(init)
    init.add_argument("--objectives", required=True, help="comma-separated objective names, e.g. vq,mq,ta")
    init.add_argument("--blocks", type=int, default=2, help="transformer blocks in the trunk (default 2)")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("out", type=Path)

    _add_train_reward_parser(sub)
    _add_align_parser(sub)
    _add_demo_parsers(sub)
    return parser


def _add_demo_parsers(sub) -> None:
    """``nrg demo train|make-pairs|diagnose`` and ``nrg eval``: the synthetic demo world (docs/demo.md)."""
    demo = sub.add_parser("demo", help="the synthetic demo world: train its model, make preference pairs")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)

    train = demo_sub.add_parser("train", help="train the demo Wan pipeline on the synthetic world (CPU)")
    train.add_argument("--out", type=Path, default=Path("out/demo-pipeline"), help="output diffusers directory")
    train.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget; sets the step counts")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--vae-steps", type=int, default=None, help="override the VAE step count")
    train.add_argument("--dit-steps", type=int, default=None, help="override the transformer step count")
    train.add_argument("--latent-clips", type=int, default=None, help="clips pre-encoded for the transformer")
    train.add_argument("--check-clips", type=int, default=None, help="held-out clips scored at the end (0: none)")
    train.add_argument("--vae-from", type=Path, default=None,
                       help="reuse the trained VAE of an earlier run's output directory (same seed: identical)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    pairs = demo_sub.add_parser("make-pairs", help="sample the demo model and write ground-truth-labelled preference pairs")
    pairs.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    pairs.add_argument("--out", type=Path, required=True, help="data set directory (docs/reward_training.md format)")
    pairs.add_argument("--pairs", type=int, default=640,
                       help="prompt draws (default 640); each gives every pair of its --pool samples")
    pairs.add_argument("--pool", type=int, default=2,
                       help="samples per prompt draw, all of whose K(K-1)/2 pairs are written (default 2: one pair)")
    pairs.add_argument("--contrastive", action="store_true",
                       help="also one prompt-contrastive pair per sample (the clip under its prompt vs a changed one)")
    pairs.add_argument("--steps", type=int, default=None, help="denoising steps (default: the demo's 20)")
    pairs.add_argument("--batch", type=int, default=32, help="samples per sampler batch (default 32)")
    pairs.add_argument("--device", default="cpu")
    pairs.add_argument("--quiet", action="store_true", help="no progress bar")

    diag = demo_sub.add_parser("diagnose", help="cosine between a reward model's input gradients and the "
                                                "differentiable oracle's, per noise level")
    diag.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    diag.add_argument("--reward", type=Path, default=None, help="reward model (default: the embedded demo reward)")
    diag.add_argument("--seeds", type=int, default=4, help="tuning seeds per held-out prompt (default 4: 32 clips)")
    diag.add_argument("--steps", type=int, default=None, help="denoising steps of the samples (default 20)")
    diag.add_argument("--device", default="cpu")
    diag.add_argument("--output", type=Path, default=None, help="write the report as JSON")

    ev = sub.add_parser("eval", help="Flow-NRG on the demo world: guided vs unguided, ground-truth metrics")
    ev.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    ev.add_argument("--reward", type=Path, default=None, help="reward model (default: the embedded demo reward)")
    ev.add_argument("--settings", default="0:0:1,0.1:0.1:0.8,0.5:0.5:0,1:0:0,0:1:0,1:1:1",
                    help="comma-separated VQ:MQ:TA weight settings (default: the paper's Table 5 rows, "
                         "1:0:0, 0:1:0 and 1:1:1)")
    ev.add_argument("--strengths", default=None,
                    help="comma-separated guidance strengths (default: the reward model's recommended one)")
    ev.add_argument("--prompts", type=int, default=None, help="first N held-out prompts (default: all 8)")
    ev.add_argument("--seeds", type=int, default=None,
                    help="seeds per prompt (default 12, i.e. 96 clips per row; 4 with --tune)")
    ev.add_argument("--steps", type=int, default=None, help="denoising steps (default: the demo's 20)")
    ev.add_argument("--window", type=_window, default=None,
                    help="noise levels t_lo,t_hi to guide (default: the reward model's recommended window)")
    ev.add_argument("--mode", choices=MODES, default=None, help="guidance mode (default: the reward model's)")
    ev.add_argument("--tune", action="store_true",
                    help="choose the strength on tuning seeds (the single-objective rows; never the report's seeds)")
    ev.add_argument("--calibrate", action="store_true",
                    help="only sample unguided clips on tuning seeds and measure the reward's score statistics")
    ev.add_argument("--write-defaults", action="store_true",
                    help="with --tune: store the chosen mode, strength and window in the reward model's config; "
                         "with --tune or --calibrate: also its calibration (score mean and std on unguided clips)")
    ev.add_argument("--figures", type=Path, default=None,
                    help="directory for the contact sheet and trade-off plot PNGs")
    ev.add_argument("--oracle", action="store_true",
                    help="guide with the differentiable oracle of the ground truth instead of the reward model "
                         "(the ceiling; slow: every guided step decodes and backpropagates through the VAE)")
    ev.add_argument("--device", default=None)
    ev.add_argument("--output", type=Path, default=None, help="write the full report as JSON")
    ev.add_argument("--benchmarks", type=Path, default=None,
                    help="append the table with its command, device and date to this file (e.g. docs/benchmarks.md)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                    help="compare this aligned checkpoint with the base model, with and without guidance, "
                         "instead of the guidance table (repeatable; docs/align.md)")
    ev.add_argument("--checkpoint-guidance", default="0:1:0", metavar="VQ:MQ:TA",
                    help="with --checkpoint: the guidance setting of the '+ guidance' configs ('none': no guided "
                         "configs; default 0:1:0, strength from --strengths or the reward model's default)")
    ev.add_argument("--checkpoint-seeds", choices=("report", "tune"), default="report",
                    help="with --checkpoint: the report seeds (default) or the tuning seeds")


def _add_train_reward_parser(sub) -> None:
    """``nrg train-reward``: Bradley-Terry-with-ties training on a preference data set
    (docs/reward_training.md)."""
    train = sub.add_parser("train-reward", help="train a latent reward model on a preference data set",
                           description="Train a latent reward model on noisy latents of preference pairs "
                                       "(see docs/reward_training.md for the data set format).")
    _add_model_args(train)
    train.add_argument("--data", type=Path, required=True, help="preference data set directory (dataset.json, pairs.jsonl)")
    train.add_argument("--out", type=Path, required=True, help="output reward model directory")
    train.add_argument("--objectives", default=None, help="comma-separated subset to train (default: the data set's)")
    train.add_argument("--blocks", type=int, default=None, help="transformer blocks in the trunk (default 2)")
    train.add_argument("--init", type=Path, default=None, help="resume from this reward model directory")
    train.add_argument("--epochs", type=int, default=2, help="passes over the training pairs (default 2)")
    train.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    train.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    train.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    train.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    train.add_argument("--t-min", type=float, default=0.0, help="lowest training noise level (default 0)")
    train.add_argument("--t-max", type=float, default=1.0, help="highest training noise level (default 1)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--freeze-trunk", action="store_true", help="train the head only")
    train.add_argument("--decorrelation", type=float, default=0.0,
                       help="weight of the penalty on the squared cosine between objectives' input gradients "
                            "(default 0: off; e.g. 1)")
    train.add_argument("--input-noise", type=float, default=0.0,
                       help="Gaussian noise added to the noisy latents, as a share of their RMS (default 0; e.g. 0.1)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")


# -- nrg align (docs/align.md) ------------------------------------------------------------------


def _add_align_parser(sub) -> None:
    """``nrg align``: Flow-DPO on preference pairs or Flow-RWR on scored clips, writing a LoRA."""
    from guidance.align.losses import BETA_SCHEDULES
    from guidance.align.config import DEFAULT_TARGETS, METHODS, AlignConfig

    d = AlignConfig()
    align = sub.add_parser("align", help="train an aligned LoRA checkpoint (Flow-DPO or Flow-RWR)",
                           description="Train a LoRA on a pipeline's transformer with Flow-DPO (preference pairs, "
                                       "pairs.jsonl) or Flow-RWR (scored clips, clips.jsonl); the output directory "
                                       "loads with nrg serve --checkpoint NAME=DIR (see docs/align.md).")
    _add_model_args(align)
    align.add_argument("--method", required=True, choices=METHODS)
    align.add_argument("--data", type=Path, required=True, help="data set directory (dataset.json + pairs.jsonl "
                                                                "or clips.jsonl)")
    align.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    align.add_argument("--objectives", default=None,
                       help="objectives and weights, e.g. mq or vq=1,mq=0.5 (default: all, weight 1)")
    align.add_argument("--lora-rank", type=int, default=d.lora_rank, help=f"default {d.lora_rank}")
    align.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help=f"default {d.lora_alpha:g}")
    align.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                       help=f"comma-separated module names to adapt (default {','.join(DEFAULT_TARGETS)})")
    align.add_argument("--beta", type=float, default=d.beta, help=f"Flow-DPO beta, mean-reduced errors (default {d.beta:g})")
    align.add_argument("--beta-schedule", choices=BETA_SCHEDULES, default=d.beta_schedule,
                       help="constant beta (default) or the paper's beta (1 - t)^2")
    align.add_argument("--tau", type=float, default=d.tau, help=f"Flow-RWR temperature: weights exp(r / tau) "
                                                               f"(default {d.tau:g})")
    align.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    align.add_argument("--weight-decay", type=float, default=d.weight_decay)
    align.add_argument("--grad-clip", type=float, default=d.grad_clip)
    length = align.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument("--epochs", type=int, default=None, help="passes over the training data (default 1)")
    align.add_argument("--batch", type=int, default=d.batch, help=f"pairs or clips per step (default {d.batch})")
    align.add_argument("--t-min", type=float, default=d.t_min)
    align.add_argument("--t-max", type=float, default=d.t_max)
    align.add_argument("--seed", type=int, default=d.seed)
    align.add_argument("--eval-every", type=int, default=None, help="steps between held-out evaluations")
    align.add_argument("--save-every", type=int, default=None, help="steps between saved states (default: eval)")
    align.add_argument("--eval-pairs", type=Path, default=None,
                       help="Flow-RWR: preference data set whose test pairs measure implicit accuracy "
                            "(default: --data's pairs.jsonl if it has one)")
    align.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    align.add_argument("--quiet", action="store_true", help="no progress bars")


def _align(args: argparse.Namespace) -> None:
    from guidance.align.data import parse_objective_weights
    from guidance.align.scored_clips import load_scored_clips, read_clips
    from guidance.align.config import AlignConfig
    from guidance.align.trainer import align
    from guidance.train.preference_data import PAIRS_FILE, load_preference_data, read_pairs

    config = AlignConfig(
        method=args.method, objectives=args.objectives, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()), beta=args.beta,
        beta_schedule=args.beta_schedule, tau=args.tau, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, steps=args.steps, epochs=args.epochs, batch=args.batch, t_min=args.t_min,
        t_max=args.t_max, seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
    )
    config.validate()
    # Fail on a malformed data set or objective before minutes of loading.
    info, _ = read_pairs(args.data) if args.method == "flow-dpo" else read_clips(args.data)
    weights = parse_objective_weights(args.objectives, info.objectives)
    eval_dir = args.eval_pairs
    if eval_dir is None and args.method == "flow-rwr" and (args.data / PAIRS_FILE).is_file():
        eval_dir = args.data
    if eval_dir is not None:
        read_pairs(eval_dir)
    family = _load(args)
    progress = not args.quiet
    if args.method == "flow-dpo":
        data = load_preference_data(args.data, family, list(weights), progress=progress)
    else:
        data = load_scored_clips(args.data, family, list(weights), progress=progress)
    eval_pairs = None if eval_dir is None else load_preference_data(eval_dir, family, list(weights), progress=progress)
    align(family, data, config, args.out, resume=args.resume, eval_pairs=eval_pairs, model_path=args.model,
          progress=progress)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"NRG_{name}", default)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in (_env(name) or "").split(",") if item.strip()]


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


def _add_serve_parser(sub) -> None:
    """``nrg serve``: every flag also reads ``NRG_<FLAG>`` (lists comma-separated)."""
    limits = Limits()
    serve = sub.add_parser("serve", help="run the HTTP video-jobs server",
                           description="Every flag can also be set by the environment variable NRG_<FLAG> "
                                       "(e.g. NRG_PORT, NRG_MODEL=a=/m/a,b=/m/b, NRG_API_KEYS=k1,k2).")
    listed = _AppendReplacingDefault
    serve.add_argument("--model", action=listed, default=_env_list("MODEL"), metavar="[NAME=]DIR",
                       help="pipeline directory, repeatable (default: the embedded demo model as 'nrg-demo')")
    serve.add_argument("--reward", action=listed, default=_env_list("REWARD"), metavar="[MODEL=]DIR",
                       help="reward model directory for a model (default: the first model)")
    serve.add_argument("--checkpoint", action=listed, default=_env_list("CHECKPOINT"),
                       metavar="[MODEL/]NAME=DIR", help="aligned checkpoint (LoRA or full weights), repeatable")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "data")))
    serve.add_argument("--max-batch", type=int, default=int(_env("MAX_BATCH", "4")))
    serve.add_argument("--batch-wait-ms", type=float, default=float(_env("BATCH_WAIT_MS", "50")))
    serve.add_argument("--batching", choices=BATCHING_MODES, default=_env("BATCHING", "continuous"),
                       help="continuous (default): jobs join a running batch at the next step and take the slots "
                       "of finished ones; static: a batch is fixed when it starts (waiting --batch-wait-ms to fill)")
    serve.add_argument("--max-queue", type=int, default=int(_env("MAX_QUEUE", "64")))
    serve.add_argument("--api-key", action=listed, dest="api_keys", default=_env_list("API_KEYS"),
                       help="accepted bearer key, repeatable (default: no auth)")
    serve.add_argument("--allowed-host", action=listed, dest="allowed_hosts", default=_env_list("ALLOWED_HOSTS"),
                       metavar="NAME", help="Host name to answer besides IP addresses, localhost and --host, "
                                            "repeatable; '*' answers any (default: none)")
    serve.add_argument("--cors-origin", action=listed, dest="cors_origins", default=_env_list("CORS_ORIGINS"),
                       metavar="ORIGIN", help="origin (scheme://host[:port]) allowed cross-origin requests, "
                                              "repeatable; '*' allows any (default: none)")
    serve.add_argument("--retention", type=_days, default=_env("RETENTION_DAYS", "7"), metavar="DAYS",
                       help="days a finished job's files are kept; 0 keeps them forever (default 7)")
    serve.add_argument("--device", default=_env("DEVICE"))
    serve.add_argument("--dtype", choices=DTYPES, default=_env("DTYPE", "float32"))
    serve.add_argument("--shutdown-grace", type=float, default=float(_env("SHUTDOWN_GRACE", "30")), metavar="SECONDS",
                       help="after SIGTERM, how long the running jobs may take to finish (default 30)")
    serve.add_argument("--log-format", choices=("text", "json"), default=_env("LOG_FORMAT", "text"),
                       help="log lines for people (text, the default) or one JSON object per line (json)")
    serve.add_argument("--allow-empty-store", action="store_true",
                       default=_env("ALLOW_EMPTY_STORE", "") not in ("", "0", "false"),
                       help="start even though the job store is missing or empty while DATA_DIR/videos holds files")
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
    from server.config import DEMO_MODEL_NAME, ServerConfig

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
        host=args.host, port=args.port, data_dir=args.data_dir, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, batching=args.batching, max_queue=args.max_queue, api_keys=tuple(args.api_keys),
        device=args.device, dtype=args.dtype,
        limits=Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}),
        shutdown_grace_s=args.shutdown_grace, allow_empty_store=args.allow_empty_store,
        allowed_hosts=tuple(args.allowed_hosts), cors_origins=tuple(args.cors_origins), retention_days=args.retention,
    )


def _serve(args: argparse.Namespace) -> int:
    import logging

    from server import listen, log_format, serving
    from server.app import create_app
    from server.config import load_models
    from server.store_integrity import check_data_dir

    check_data_dir(args.data_dir, args.allow_empty_store)  # before minutes of model loading
    config = server_config(args)
    if args.log_format not in log_format.FORMATS:  # NRG_LOG_FORMAT is not checked by argparse
        raise ValueError(f"--log-format must be one of {', '.join(log_format.FORMATS)}; got {args.log_format!r}")
    sock = listen.bind(config.host, config.port)  # a busy port fails now, in one line, not after loading
    log_format.configure(args.log_format)
    app = create_app(config, load_models(config))
    if not config.allowed_hosts:
        logging.getLogger("nrg.server").info(
            "answering Host headers that are IP addresses, localhost or %s; list any other name clients use "
            "with --allowed-host (NRG_ALLOWED_HOSTS)", config.host)
    url = f"http://{config.host}:{config.port}"
    print(f"nrg-serve on {url} (models: {', '.join(app.state.engine.models)}); playground {url}/, "
          f"API docs {url}/docs", flush=True)
    status = serving.run(app, config.host, config.port, sock=sock, log_config=None)
    if not app.state.engine.finished:
        # The grace ran out mid-batch (the store re-queues that batch at the next start). Interpreter
        # teardown under a thread still inside torch aborts the process, so leave without it.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(status)
    return status


def _load(args: argparse.Namespace):
    import torch

    from guidance.demo import DEFAULT_MODEL_DIR
    from guidance.families import load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_pipeline(args.model or DEFAULT_MODEL_DIR, device=device, dtype=getattr(torch, args.dtype))


def _generate(args: argparse.Namespace) -> None:
    from guidance import demo
    from guidance.families.base import VideoShape
    from guidance.nrg import defaults_for, parse_weights
    from guidance.output_checks import output_problems
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample
    from guidance.video_io import write_video
    from server import pipeline_defaults
    from server.pipeline_defaults import PipelineDefaults

    if args.out.suffix not in (".mp4", ".npy"):
        raise ValueError(f"--out must end in .mp4 or .npy; got {args.out}")
    embedded = args.model is None
    if args.reward is None and embedded and demo.DEFAULT_REWARD_DIR.is_dir():
        args.reward = demo.DEFAULT_REWARD_DIR  # the embedded model's own trained reward, as the server uses
    if (args.weights or args.strength is not None or args.mode or args.window) and args.reward is None:
        raise ValueError("--weights/--strength/--mode/--window need --reward DIR (a reward model to guide with)")
    family = _load(args)
    defaults = (PipelineDefaults(demo.DEFAULT_SHAPE, demo.DEFAULT_STEPS) if embedded
                else pipeline_defaults.read(args.model, family))
    width, height = args.size or (defaults.shape.width, defaults.shape.height)
    shape = VideoShape(height=height, width=width, frames=args.frames or defaults.shape.frames)
    steps = args.steps or defaults.steps
    reward = load_reward_model(args.reward, family) if args.reward else None
    if reward is not None:
        source = "the embedded demo reward" if args.reward == demo.DEFAULT_REWARD_DIR else str(args.reward)
        print(f"reward model: {source} (objectives {', '.join(reward.objectives)})")
    if args.checkpoint is not None:
        from guidance.checkpoints import CheckpointRegistry

        # After the reward model: its trunk is copied from the base transformer, as in the server.
        CheckpointRegistry(family, {"checkpoint": args.checkpoint}).activate("checkpoint")
    guidance = None
    if reward is not None and args.weights:
        guidance = defaults_for(reward).complete(parse_weights(args.weights), args.strength, args.window, args.mode,
                                                 args.particles)
        guidance.validate(reward.objectives)
    spec = SampleSpec(args.prompt, args.negative_prompt, args.seed, args.cfg, guidance)
    result = sample(family, [spec], shape, steps, reward, progress=not args.quiet)
    problem = output_problems(result, steps)[0]
    if problem is not None:
        raise ValueError(f"generation failed, nothing written: {problem}")
    path = write_video(result.frames[0], args.out, fps=args.fps)
    print(f"wrote {path} ({shape.frames} frames, {shape.width}x{shape.height}, {steps} steps, seed {args.seed})")
    if result.rewards is not None:
        scores = ", ".join(f"{name}={value:.4f}" for name, value in zip(result.objectives, result.rewards[0].tolist()))
        print(f"final-latent rewards: {scores}")
        if reward.calibration is not None:
            z = reward.calibration.z_scores(dict(zip(result.objectives, result.rewards[0].tolist())))
            print("as z-scores against unguided samples: " + ", ".join(f"{k}={v:+.2f}" for k, v in z.items()))
        if guidance is not None:
            print(f"guidance: mode {guidance.mode}, strength {guidance.strength:g}, window {list(guidance.window)}"
                  + (f", {guidance.particles} particles" if guidance.search else ""))
            print(f"guided steps: {result.guided_steps[0]}, skipped (non-finite gradient): {result.skipped_steps[0]}, "
                  f"cost vs unguided: {result.denoiser_passes[0] / steps:.2f}x")


def _make_tiny(args: argparse.Namespace) -> None:
    from guidance.families.tiny import make_tiny

    from server import pipeline_defaults

    out = make_tiny(args.family, args.out, args.seed)
    defaults = pipeline_defaults.TINY_BY_FAMILY.get(args.family, pipeline_defaults.TINY)
    pipeline_defaults.write(out, args.family)
    print(f"wrote tiny {args.family} pipeline to {out} (defaults in {pipeline_defaults.FILENAME}: "
          f"{defaults['width']}x{defaults['height']}, {defaults['num_frames']} frames, "
          f"{defaults['num_inference_steps']} steps)")


def _init_reward(args: argparse.Namespace) -> None:
    from guidance.reward_model import init_reward_model

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    model = init_reward_model(_load(args), objectives, num_blocks=args.blocks, seed=args.seed)
    model.save(args.out)
    print(f"wrote untrained reward model ({', '.join(objectives)}; {args.blocks} trunk blocks) to {args.out}")


def _train_reward(args: argparse.Namespace) -> None:
    from guidance.train.preference_data import load_preference_data, read_pairs
    from guidance.train.reward import TrainConfig, train_reward_model

    objectives = None
    if args.objectives is not None:
        objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
        if not objectives:
            raise ValueError(f"--objectives must name at least one objective; got {args.objectives!r}")
    config = TrainConfig(
        objectives=objectives, num_blocks=args.blocks, init=None if args.init is None else str(args.init),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, t_min=args.t_min, t_max=args.t_max, seed=args.seed, freeze_trunk=args.freeze_trunk,
        decorrelation=args.decorrelation, input_noise=args.input_noise,
    )
    config.validate()
    read_pairs(args.data)  # fail on a malformed data set before loading the pipeline
    family = _load(args)
    data = load_preference_data(args.data, family, objectives, progress=not args.quiet)
    train_reward_model(family, data, config, args.out, progress=not args.quiet)


def _demo(args: argparse.Namespace) -> None:
    if args.demo_command == "train":
        from guidance.demo.train import TrainConfig, train_demo

        cfg = TrainConfig(seed=args.seed, minutes=args.minutes, vae_steps=args.vae_steps, dit_steps=args.dit_steps,
                          threads=args.threads)
        if args.latent_clips is not None:
            cfg.latent_clips = args.latent_clips
        if args.check_clips is not None:
            cfg.check_clips = args.check_clips
        if args.vae_from is not None:
            cfg.vae_from = str(args.vae_from)
        summary = train_demo(args.out, cfg, progress=not args.quiet)
        print(f"wrote demo pipeline to {args.out} in {summary['total_minutes']} min")
    elif args.demo_command == "diagnose":
        from guidance.demo.diagnose import format_gradient_report, run_diagnostic

        report = run_diagnostic(args.model, args.reward, args.seeds, args.steps, args.device)
        print(format_gradient_report(report))
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=1))
            print(f"wrote {args.output}")
    elif args.demo_command == "make-pairs":
        from guidance.demo.pairs import make_pairs

        summary = make_pairs(args.out, args.pairs, args.model, args.steps, args.batch, args.device, not args.quiet,
                             args.pool, args.contrastive)
        print(f"wrote {summary['pairs']} pairs to {args.out} (splits {summary['splits']}; "
              f"sampling {summary['sample_seconds']} s)")
        for objective, counts in summary["labels"].items():
            print(f"  {objective}: {counts}")


def _eval(args: argparse.Namespace) -> None:
    from guidance.demo import DEFAULT_REWARD_DIR, evaluate

    strengths = None
    if args.strengths is not None:
        try:
            strengths = [float(w) for w in args.strengths.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"--strengths must be comma-separated numbers; got {args.strengths!r}") from None
    if args.checkpoint:
        _eval_checkpoints(args, strengths)
        return
    if args.write_defaults and not (args.tune or args.calibrate):
        raise ValueError("--write-defaults stores what --tune or --calibrate measures; give one of them too")
    if args.tune and args.calibrate:
        raise ValueError("--tune already calibrates; give --tune or --calibrate, not both")
    if args.tune and not strengths:
        raise ValueError("--tune needs --strengths to choose from, e.g. --strengths 1,2,3,5")
    if args.oracle and (args.tune or args.calibrate):
        raise ValueError("--oracle measures the ceiling of guidance; it does not tune or calibrate the reward model")
    common = dict(model=args.model, reward=args.reward, prompts=args.prompts, steps=args.steps, window=args.window,
                  mode=args.mode, device=args.device, progress=not args.quiet, command=evaluate.command_line(args.argv),
                  figures=args.figures, **({"oracle": True} if args.oracle else {}))
    reward_dir = args.reward or DEFAULT_REWARD_DIR
    if args.calibrate:
        report = evaluate.calibrate(seeds=args.seeds or 4, **common)
        print(f"calibration: {report['calibration']}")
    elif args.tune:
        report, best = evaluate.tune(strengths, seeds=args.seeds or 4, **common)
        print(evaluate.format_table(report))
        print(f"chosen strength: {best:g} (mode {report['mode']}, window {report['window']})")
        if args.write_defaults:
            from guidance.nrg import GuidanceDefaults
            from guidance.reward_model import write_guidance_defaults

            source = (f"nrg eval --tune, {report['date']}: seeds {report['seeds'][0]}..{report['seeds'][-1]}, "
                      f"scores {report['tuning_scores']}")
            chosen = GuidanceDefaults(report["mode"], best, tuple(report["window"]), source)
            print(f"wrote guidance_defaults to {write_guidance_defaults(reward_dir, chosen)}")
    else:
        settings = [s.strip() for s in args.settings.split(",") if s.strip()]
        report = evaluate.run_eval(settings=settings, strengths=strengths, seeds=args.seeds or evaluate.DEFAULT_SEEDS,
                                   **common)
        print(evaluate.format_table(report))
    if args.write_defaults and report["calibration"] is None:
        print("no calibration written: it needs at least 2 unguided clips (more --prompts or --seeds)")
    elif args.write_defaults:
        from guidance.reward_model import RewardCalibration, write_calibration

        calibration = RewardCalibration.from_json(report["calibration"], report["objectives"], "report")
        print(f"wrote calibration to {write_calibration(reward_dir, calibration)}")
    if args.output:
        print(f"wrote {evaluate.write_json(report, args.output)}")
    if args.benchmarks and report["rows"]:
        print(f"appended the table to {evaluate.append_benchmarks(args.benchmarks, report)}")


def _eval_checkpoints(args: argparse.Namespace, strengths: list[float] | None) -> None:
    """``nrg eval --checkpoint NAME=DIR``: aligned vs base, with and without guidance (guidance/demo/compare.py)."""
    from guidance.demo import compare, evaluate

    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint expects NAME=DIR; got {item!r}")
        checkpoints[name] = Path(path)
    if strengths is not None and len(strengths) != 1:
        raise ValueError(f"with --checkpoint, give one --strengths value; got {strengths}")
    setting = None if args.checkpoint_guidance == "none" else args.checkpoint_guidance
    report = compare.run_checkpoint_eval(
        checkpoints, model=args.model, reward=args.reward, setting=setting,
        strength=None if strengths is None else strengths[0], prompts=args.prompts,
        seeds=args.seeds or evaluate.DEFAULT_SEEDS, seed_set=args.checkpoint_seeds, steps=args.steps,
        device=args.device, progress=not args.quiet, command=evaluate.command_line(args.argv),
    )
    print(compare.format_checkpoint_table(report))
    if args.output:
        print(f"wrote {evaluate.write_json(report, args.output)}")
    if args.benchmarks:
        path = Path(args.benchmarks)
        text = path.read_text() if path.is_file() else evaluate.BENCHMARKS_HEADER
        path.write_text(text.rstrip("\n") + "\n\n" + compare.checkpoint_benchmark_section(report))
        print(f"appended the table to {path}")


COMMANDS = {
    "generate": _generate, "make-tiny": _make_tiny, "init-reward": _init_reward, "serve": _serve,
    "train-reward": _train_reward, "demo": _demo, "eval": _eval, "align": _align,
}


def main(argv: Sequence[str] | None = None) -> int:
    from server.store_errors import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports (nrg eval)
    try:
        return COMMANDS[args.command](args) or 0
    except (ValueError, FileNotFoundError, StoreError) as exc:
        parser.exit(2, f"nrg: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
