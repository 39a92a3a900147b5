"""``nrg make-tiny``: a tiny random pipeline of a family, for tests and smoke runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    tiny = sub.add_parser("make-tiny", help="write a tiny random pipeline of a family (tests, smoke runs)")
    tiny.add_argument("--family", required=True, choices=("wan", "ltx", "hunyuan", "cogvideox"))
    tiny.add_argument("--i2v", action="store_true",
                      help="the family's image-to-video pipeline (wan: WanImageToVideoPipeline, ltx: "
                           "LTXImageToVideoPipeline, cogvideox: CogVideoXImageToVideoPipeline)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("out", type=Path)


def run(args: argparse.Namespace) -> None:
    from guidance.testing.tiny import make_tiny

    from server import pipeline_defaults

    out = make_tiny(args.family, args.out, args.seed, i2v=args.i2v)
    defaults = pipeline_defaults.TINY_BY_FAMILY.get(args.family, pipeline_defaults.TINY)
    pipeline_defaults.write(out, args.family)
    kind = f"{args.family} image-to-video" if args.i2v else args.family
    print(f"wrote tiny {kind} pipeline to {out} (defaults in {pipeline_defaults.FILENAME}: "
          f"{defaults['width']}x{defaults['height']}, {defaults['num_frames']} frames, "
          f"{defaults['num_inference_steps']} steps)")
