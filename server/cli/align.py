"""``nrg align`` (docs/align.md): Flow-DPO on preference pairs or Flow-RWR on scored clips, writing a LoRA."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.common import _add_model_args, _load


def add_parser(sub) -> None:
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


def run(args: argparse.Namespace) -> None:
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
