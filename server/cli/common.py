"""What several ``nrg`` subcommands share: argument types, the model flags and loading the pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``guidance.precision.DTYPE_NAMES``, spelled out so that parsing the command line imports no torch.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 832x480; got {text!r}")
    return int(width), int(height)


def _window(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be T_LO,T_HI, e.g. 0.0,1.0; got {text!r}") from None
    return lo, hi


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="local diffusers pipeline directory (default: embedded demo)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="weights dtype (default: auto, bfloat16 on CUDA and float32 elsewhere)")


def _shape_and_steps(args: argparse.Namespace, family):
    """The video shape and step count a command runs with: ``--size``, ``--frames`` and ``--steps`` where given,
    else the pipeline directory's own defaults (the embedded demo's without ``--model``)."""
    from guidance import demo
    from guidance.families.base import VideoShape
    from server import pipeline_defaults
    from server.pipeline_defaults import PipelineDefaults

    defaults = (PipelineDefaults(demo.DEFAULT_SHAPE, demo.DEFAULT_STEPS) if args.model is None
                else pipeline_defaults.read(args.model, family))
    width, height = args.size or (defaults.shape.width, defaults.shape.height)
    shape = VideoShape(height=height, width=width, frames=args.frames or defaults.shape.frames)
    return shape, args.steps or defaults.steps


def non_negative(text: str, rule: str) -> float:
    """A finite number >= 0, or an argparse error saying ``rule``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{rule}; got {text!r}")
    return value


def step_cache_threshold(text: str) -> float:
    """A first-block cache threshold (``--step-cache``): a number >= 0 (0: off)."""
    return non_negative(text, "step cache threshold must be a number >= 0 (0: off)")


def refuse_image_to_video(family, command: str):
    """``ValueError`` for the commands that still sample or train from prompts alone (``nrg align``, ``nrg
    eval``) on a model that needs an image; ``nrg train-reward`` and ``nrg reward distill`` take images."""
    if family.image_input == "required":
        raise ValueError(f"{command} works from prompts alone; this {family.label} model is image-to-video (every "
                         "sample needs an image), which it does not support yet (nrg train-reward and nrg reward "
                         "distill do: docs/image-to-video.md)")
    return family


def _load(args: argparse.Namespace):
    from guidance.demo import DEFAULT_MODEL_DIR
    from guidance.families import load_pipeline
    from guidance.precision import configure_matmul, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    configure_matmul(device)
    return load_pipeline(args.model or DEFAULT_MODEL_DIR, device=device, dtype=resolve_dtype(args.dtype, device))
