"""The ``nrg`` command line: generate videos, build tiny pipelines, initialise and train reward models.

One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``; what several share is in
:mod:`server.cli.common`. Building the parser imports only light modules (no torch, diffusers,
transformers or ray), so that ``nrg --help`` and every subcommand's ``--help`` answer at once; heavy
imports happen inside ``run``. Flags whose choices or defaults come from the libraries are read from
torch-free modules (``guidance.align.config``, ``guidance.nrg``, ``server.roles`` ...).

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


def command_paths(parser: argparse.ArgumentParser | None = None) -> list[tuple[str, ...]]:
    """Every command of ``nrg`` as the words that name it: ``()`` for ``nrg`` itself, then ``("generate",)``,
    ``("demo", "train")`` and so on, in the order ``--help`` lists them (what a check of every help walks)."""
    parser = parser or build_parser()
    paths: list[tuple[str, ...]] = [()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += [(name, *path) for path in command_paths(child)]
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from server.store import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports (nrg eval)
    try:
        return COMMANDS[args.command](args) or 0
    except (ValueError, FileNotFoundError, StoreError) as exc:
        parser.exit(2, f"nrg: error: {exc}\n")
