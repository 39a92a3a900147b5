"""``nrg make-tiny``: a tiny random pipeline of a family, for tests and smoke runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    tiny = sub.add_parser("make-tiny", help="write a tiny random pipeline of a family (tests, smoke runs)")
    tiny.add_argument("--family", required=True, choices=("wan", "ltx", "hunyuan", "cogvideox"))
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("out", type=Path)


def run(args: argparse.Namespace) -> None:
    from guidance.testing.tiny import make_tiny

    from server import pipeline_defaults

    out = make_tiny(args.family, args.out, args.seed)
    defaults = pipeline_defaults.TINY_BY_FAMILY.get(args.family, pipeline_defaults.TINY)
    pipeline_defaults.write(out, args.family)
    print(f"wrote tiny {args.family} pipeline to {out} (defaults in {pipeline_defaults.FILENAME}: "
          f"{defaults['width']}x{defaults['height']}, {defaults['num_frames']} frames, "
          f"{defaults['num_inference_steps']} steps)")
