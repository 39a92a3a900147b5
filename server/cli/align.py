"""``nrg align`` (docs/align.md): train a LoRA with one of the alignment methods, writing a checkpoint.

The shared settings' flags are declared here; each option group's flags come from its declaration in
:mod:`guidance.align.methods` (through the registry), in a ``--help`` section per group that names
the methods taking it.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from guidance.align.beta_schedule import BETA_SCHEDULES
from guidance.align.config import DEFAULT_TARGETS, AlignConfig
from guidance.align.methods.registry import METHODS, OPTION_GROUPS, REGISTRY, methods_taking
from server.cli.common import _add_model_args, _load, refuse_image_to_video

if TYPE_CHECKING:
    from guidance.align.methods.base import Method
    from guidance.align.methods.frame_judge import FrameJudge


def add_parser(sub) -> None:
    d = AlignConfig()
    align = sub.add_parser("align", help="train an aligned LoRA checkpoint (Flow-DPO, Flow-RWR and the methods of docs/align.md)",
                           description="Train a LoRA on a pipeline's transformer with an alignment method: Flow-DPO "
                                       "(preference pairs, pairs.jsonl), Flow-RWR (scored clips, clips.jsonl) or one "
                                       "of the methods of docs/align.md, whose options follow in a section each; the "
                                       "output directory loads with nrg serve --checkpoint NAME=DIR.")
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
    align.add_argument("--cpu-budget", type=float, default=None, metavar="SECONDS",
                       help="stop once the training steps used this much CPU time (process time, evaluations "
                            "excluded) and write the LoRA; --steps is then the most steps (one budget for methods "
                            "whose steps cost differently)")
    align.add_argument("--snapshot-every", type=int, default=None,
                       help="steps between LoRA snapshots in OUT/snapshots/step_NNNNNN/ (a win-rate curve over training)")
    align.add_argument("--eval-pairs", type=Path, default=None,
                       help="the methods on scored clips: preference data set whose test pairs measure implicit "
                            "accuracy (default for Flow-RWR: --data's pairs.jsonl if it has one)")
    for kind in OPTION_GROUPS:
        kind.add_flags(align.add_argument_group(f"{kind.title} (--method {' / '.join(methods_taking(kind))})"))
    align.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    align.add_argument("--quiet", action="store_true", help="no progress bars")


#: The option flags' dests: the options' flat names (``AlignConfig`` takes them as they are).
OPTION_NAMES = tuple(f.name for kind in OPTION_GROUPS for f in fields(kind))


def _wants_pairs(args: argparse.Namespace, method: Method) -> bool:
    """Preference pairs or scored clips, as the method takes (``Method.data``); for the methods that
    take either (clips, or the pairs' winners / prompts), pairs when the data set has a pairs.jsonl."""
    from guidance.train.preference_data import PAIRS_FILE

    return method.data == "pairs" or (method.data == "either" and (args.data / PAIRS_FILE).is_file())


def run(args: argparse.Namespace) -> None:
    from guidance.align.data import parse_objective_weights
    from guidance.align.scored_clips import load_scored_clips, read_clips
    from guidance.align.trainer import align
    from guidance.train.preference_data import PAIRS_FILE, load_preference_data, read_pairs

    config = AlignConfig(
        method=args.method, objectives=args.objectives, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()), beta=args.beta,
        beta_schedule=args.beta_schedule, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, steps=args.steps, epochs=args.epochs, batch=args.batch, t_min=args.t_min,
        t_max=args.t_max, seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
        snapshot_every=args.snapshot_every, cpu_budget_s=args.cpu_budget,
        **{name: getattr(args, name) for name in OPTION_NAMES},
    )
    config.validate()
    method = REGISTRY[config.method]
    pairs = _wants_pairs(args, method)
    # Fail on a malformed data set or objective before minutes of loading.
    info, _ = read_pairs(args.data) if pairs else read_clips(args.data)
    weights = parse_objective_weights(args.objectives, info.objectives)
    eval_dir = args.eval_pairs
    if eval_dir is None and method.data == "clips" and (args.data / PAIRS_FILE).is_file():
        eval_dir = args.data
    if eval_dir is not None:
        read_pairs(eval_dir)
    family = refuse_image_to_video(_load(args), "nrg align")
    progress = not args.quiet
    if pairs:
        data = load_preference_data(args.data, family, list(weights), progress=progress)
    else:
        data = load_scored_clips(args.data, family, list(weights), progress=progress)
    eval_pairs = None if eval_dir is None else load_preference_data(eval_dir, family, list(weights), progress=progress)
    align(family, data, config, args.out, resume=args.resume, eval_pairs=eval_pairs, model_path=args.model,
          progress=progress, frame_judge=_frame_judge() if method.uses_frame_judge(config) else None)


def _frame_judge() -> FrameJudge:
    """The frame judge a method scores decoded frames with (SPRO's ``--judge demo``): the demo world's
    ground truth (guidance has none of its own)."""
    from demo_world.judge import frame_judge

    return frame_judge()
