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
    tiny.add_argument("--variant", choices=("i2v-a14b", "ti2v-5b"),
                      help="a Wan 2.2 image-to-video pipeline instead of Wan 2.1's (--family wan; implies --i2v): "
                           "i2v-a14b: WanImageToVideoPipeline with two expert transformers switched at "
                           "boundary_ratio and no image encoder; ti2v-5b: WanImageToVideoPipeline with "
                           "expand_timesteps (the image's latents are the first latent frame) and a Wan 2.2 VAE")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("out", type=Path)


def run(args: argparse.Namespace) -> None:
    from guidance.testing.tiny import make_tiny

    from server import pipeline_defaults

    i2v = args.i2v or args.variant is not None
    out = make_tiny(args.family, args.out, args.seed, i2v=i2v, variant=args.variant)
    defaults = pipeline_defaults.TINY_BY_FAMILY.get(args.family, pipeline_defaults.TINY)
    pipeline_defaults.write(out, args.family)
    kind = f"{args.family} image-to-video" if i2v else args.family
    if args.variant is not None:
        kind += f" ({args.variant})"
    print(f"wrote tiny {kind} pipeline to {out} (defaults in {pipeline_defaults.FILENAME}: "
          f"{defaults['width']}x{defaults['height']}, {defaults['num_frames']} frames, "
          f"{defaults['num_inference_steps']} steps)")
