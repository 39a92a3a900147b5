"""``nrg align`` (docs/align.md): Flow-DPO on preference pairs or Flow-RWR on scored clips, writing a LoRA."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from guidance.align.beta_schedule import BETA_SCHEDULES
from guidance.align.config import DEFAULT_TARGETS, JUDGES, METHODS, AlignConfig
from server.cli.common import _add_model_args, _load

if TYPE_CHECKING:
    from guidance.align.methods.frame_judge import FrameJudge


def add_parser(sub) -> None:
    d = AlignConfig()
    align = sub.add_parser("align", help="train an aligned LoRA checkpoint (Flow-DPO, Flow-RWR and the methods of docs/align.md)",
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
    align.add_argument("--cpu-budget", type=float, default=None, metavar="SECONDS",
                       help="stop once the training steps used this much CPU time (process time, evaluations "
                            "excluded) and write the LoRA; --steps is then the most steps (one budget for methods "
                            "whose steps cost differently)")
    align.add_argument("--snapshot-every", type=int, default=None,
                       help="steps between LoRA snapshots in OUT/snapshots/step_NNNNNN/ (a win-rate curve over training)")
    align.add_argument("--eval-pairs", type=Path, default=None,
                       help="Flow-RWR: preference data set whose test pairs measure implicit accuracy "
                            "(default: --data's pairs.jsonl if it has one)")
    m = align.add_argument_group("methods beyond Flow-DPO / Flow-RWR (docs/align.md)")
    m.add_argument("--is-clip", type=float, default=None, metavar="EPS",
                   help="IS-DAA: multiply the pair loss by sg(exp(min(l(w) + l(l), 2 EPS))) (paper default 0.25)")
    m.add_argument("--is-kappa", type=float, default=None, help="IS-DAA: l(x) = -(kappa / 2) D(x) (default: beta)")
    m.add_argument("--teacher", default=None, metavar="REWARD_DIR",
                   help="TVKD: a latent reward model whose score of x_t is the teacher's value Phi")
    m.add_argument("--tvkd-alpha", type=float, default=d.tvkd_alpha, help=f"TVKD shaping weight (default {d.tvkd_alpha:g})")
    m.add_argument("--tvkd-gamma", type=float, default=d.tvkd_gamma, help=f"TVKD discount (default {d.tvkd_gamma:g})")
    m.add_argument("--uapa-map-ratio", type=float, default=None,
                   help="Diff-UAPA: weight of the Beta-MAP term from the annotator groups' votes (paper 0.25)")
    m.add_argument("--online-steps", type=int, default=d.online_steps,
                   help=f"sampler steps of online samples (default {d.online_steps})")
    m.add_argument("--online-cfg", type=float, default=None, help="CFG scale of online samples (default: the model's)")
    m.add_argument("--reward-model", default=None, metavar="REWARD_DIR",
                   help="SPO / GradSPO: the step-aware scorer; SPRO: the judge with --judge reward")
    m.add_argument("--dro-margin", type=float, default=d.dro_margin, help=f"Diffusion-DRO margin (default {d.dro_margin:g})")
    m.add_argument("--dro-lag", type=int, default=d.dro_lag, help=f"steps between lagging-copy refreshes (default {d.dro_lag})")
    m.add_argument("--sudo-transforms", default=d.sudo_transforms,
                   help=f"SUDO losers: permute (TA), reverse / shuffle (MQ), blur / noise (VQ) (default {d.sudo_transforms})")
    m.add_argument("--sudo-sft", type=float, default=d.sudo_sft, help=f"SUDO weight of the winner's FM loss (default {d.sudo_sft:g})")
    m.add_argument("--sudo-blur", type=int, default=d.sudo_blur, help=f"SUDO blur radius in latent pixels (default {d.sudo_blur})")
    m.add_argument("--sudo-noise", type=float, default=d.sudo_noise, help=f"SUDO noise std in latent units (default {d.sudo_noise:g})")
    m.add_argument("--spo-children", type=int, default=d.spo_children, help=f"SPO children per x_t (default {d.spo_children})")
    m.add_argument("--spo-beta", type=float, default=d.spo_beta, help=f"SPO beta (default {d.spo_beta:g})")
    m.add_argument("--spo-clip", type=float, default=d.spo_clip, help=f"SPO ratio clamp eps (default {d.spo_clip:g})")
    m.add_argument("--spo-threshold", type=float, default=d.spo_threshold,
                   help=f"SPO: softmax-probability gap a pair needs (default {d.spo_threshold:g})")
    m.add_argument("--spo-noise", type=float, default=d.spo_noise, help=f"SDE noise level a (default {d.spo_noise:g})")
    m.add_argument("--gradspo-g", type=float, default=d.gradspo_g, help=f"GradSPO guidance scale g (default {d.gradspo_g:g})")
    m.add_argument("--gradspo-ema", type=float, default=d.gradspo_ema, help=f"GradSPO EMA decay (default {d.gradspo_ema:g})")
    m.add_argument("--rounds", type=int, default=d.rounds, help=f"SPRO self-play rounds (default {d.rounds})")
    m.add_argument("--spro-samples", type=int, default=d.spro_samples, help=f"SPRO clips per prompt and round (default {d.spro_samples})")
    m.add_argument("--judge", choices=JUDGES, default=d.judge,
                   help="SPRO judge: the --reward-model at t = 0, or the demo world's ground truth (default reward)")
    m.add_argument("--hybrid-offline", type=int, default=d.hybrid_offline, help=f"hybrid: N offline DPO steps (default {d.hybrid_offline})")
    m.add_argument("--hybrid-online", type=int, default=d.hybrid_online, help=f"hybrid: M online steps per cycle (default {d.hybrid_online}; 0: Flow-DPO)")
    m.add_argument("--online-prompts", default=None, help="hybrid: prompt file, one a line (default: the data's prompts)")
    align.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    align.add_argument("--quiet", action="store_true", help="no progress bars")


METHOD_FIELDS = ("is_clip", "is_kappa", "teacher", "tvkd_alpha", "tvkd_gamma", "uapa_map_ratio", "online_steps",
                 "online_cfg", "reward_model", "dro_margin", "dro_lag", "sudo_transforms", "sudo_sft", "sudo_blur",
                 "sudo_noise", "spo_children", "spo_beta", "spo_clip", "spo_threshold", "spo_noise", "gradspo_g",
                 "gradspo_ema", "rounds", "spro_samples", "judge", "hybrid_offline", "hybrid_online", "online_prompts")


def _wants_pairs(args: argparse.Namespace) -> bool:
    """Preference pairs for the pair methods; scored clips for Flow-RWR; for the methods that take
    either (DRO, SUDO, SPO, GradSPO, SPRO: clips or the pairs' winners / prompts), pairs when the
    data set has a pairs.jsonl."""
    from guidance.train.preference_data import PAIRS_FILE

    if args.method in ("flow-dpo", "abc", "hybrid"):
        return True
    if args.method == "flow-rwr":
        return False
    return (args.data / PAIRS_FILE).is_file()


def run(args: argparse.Namespace) -> None:
    from guidance.align.data import parse_objective_weights
    from guidance.align.scored_clips import load_scored_clips, read_clips
    from guidance.align.trainer import align
    from guidance.train.preference_data import PAIRS_FILE, load_preference_data, read_pairs

    config = AlignConfig(
        method=args.method, objectives=args.objectives, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()), beta=args.beta,
        beta_schedule=args.beta_schedule, tau=args.tau, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, steps=args.steps, epochs=args.epochs, batch=args.batch, t_min=args.t_min,
        t_max=args.t_max, seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
        snapshot_every=args.snapshot_every, cpu_budget_s=args.cpu_budget,
        **{name: getattr(args, name) for name in METHOD_FIELDS},
    )
    config.validate()
    # Fail on a malformed data set or objective before minutes of loading.
    info, _ = read_pairs(args.data) if _wants_pairs(args) else read_clips(args.data)
    weights = parse_objective_weights(args.objectives, info.objectives)
    eval_dir = args.eval_pairs
    if eval_dir is None and args.method == "flow-rwr" and (args.data / PAIRS_FILE).is_file():
        eval_dir = args.data
    if eval_dir is not None:
        read_pairs(eval_dir)
    family = _load(args)
    progress = not args.quiet
    if _wants_pairs(args):
        data = load_preference_data(args.data, family, list(weights), progress=progress)
    else:
        data = load_scored_clips(args.data, family, list(weights), progress=progress)
    eval_pairs = None if eval_dir is None else load_preference_data(eval_dir, family, list(weights), progress=progress)
    align(family, data, config, args.out, resume=args.resume, eval_pairs=eval_pairs, model_path=args.model,
          progress=progress, frame_judge=_frame_judge(config.judge))


def _frame_judge(judge: str) -> FrameJudge | None:
    """The frame judge behind ``--judge demo``: the demo world's ground truth (guidance has none of its own)."""
    if judge != "demo":
        return None
    from demo_world.judge import frame_judge

    return frame_judge()
