"""``nrg train-reward``: Bradley-Terry-with-ties training on a preference data set (docs/reward_training.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.common import _add_model_args, _load


def add_parser(sub) -> None:
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
    train.add_argument("--trajectory-share", type=float, default=0.0,
                       help="share of the pairs that record sampler states (make-pairs --states) trained on one of "
                            "those states instead of forward-noised final latents (default 0; e.g. 0.5)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
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
        trajectory_share=args.trajectory_share,
    )
    config.validate()
    read_pairs(args.data)  # fail on a malformed data set before loading the pipeline
    family = _load(args)
    data = load_preference_data(args.data, family, objectives, progress=not args.quiet)
    train_reward_model(family, data, config, args.out, progress=not args.quiet)
