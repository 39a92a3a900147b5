"""``nrg init-reward``: an untrained latent reward model for a pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.common import _add_model_args, _load


def add_parser(sub) -> None:
    init = sub.add_parser("init-reward", help="write an untrained latent reward model for a pipeline")
    _add_model_args(init)
    init.add_argument("--objectives", required=True, help="comma-separated objective names, e.g. vq,mq,ta")
    init.add_argument("--blocks", type=int, default=2, help="transformer blocks in the trunk (default 2)")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("out", type=Path)


def run(args: argparse.Namespace) -> None:
    from guidance.reward_model import init_reward_model

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    model = init_reward_model(_load(args), objectives, num_blocks=args.blocks, seed=args.seed)
    model.save(args.out)
    print(f"wrote untrained reward model ({', '.join(objectives)}; {args.blocks} trunk blocks) to {args.out}")
