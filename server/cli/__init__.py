"""The ``nrg`` command line: generate videos, build tiny pipelines, initialise and train reward models.

One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``; what several share is in
:mod:`server.cli.common`. Heavy imports (torch, diffusers, the app) happen inside ``run``.

Errors a user can fix (bad flags, unknown objectives, wrong directories) are printed as one line
prefixed ``nrg: error:`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from server.cli import align, demo, generate, init_reward, make_tiny, reward, serve, train_reward
from server.cli import ray as ray_  # `nrg ray`; Ray itself is imported only when it runs
from server.cli import eval as eval_  # `nrg eval`; aliased so that no line here reads like the builtin

#: subcommand -> its module, in the order ``nrg --help`` lists them
SUBCOMMANDS = {
    "generate": generate, "make-tiny": make_tiny, "serve": serve, "worker": serve, "init-reward": init_reward,
    "train-reward": train_reward, "reward": reward, "align": align, "demo": demo, "eval": eval_, "ray": ray_,
}
COMMANDS = {name: module.run for name, module in SUBCOMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nrg", description="Flow-NRG steered text-to-video generation and serving")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(SUBCOMMANDS.values()):  # serve adds `serve` and its shorthand `worker`
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from server.store import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports (nrg eval)
    try:
        return COMMANDS[args.command](args) or 0
    except (ValueError, FileNotFoundError, StoreError) as exc:
        parser.exit(2, f"nrg: error: {exc}\n")
