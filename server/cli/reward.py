"""``nrg reward distill``: a latent reward model for any pipeline, distilled from a judge (docs/your-model.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.common import _add_model_args, _load, _shape_and_steps, _size, _window


def _strengths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"strengths must be comma-separated numbers, e.g. 2,4,8; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("strengths must name at least one value")
    return values


def add_parser(sub) -> None:
    reward = sub.add_parser("reward", help="build a latent reward model for your own pipeline")
    actions = reward.add_subparsers(dest="reward_command", required=True)
    distill = actions.add_parser(
        "distill", help="sample, judge, label, train, calibrate and tune a latent reward from a judge",
        description="From a diffusers directory, a prompt file and a judge to a latent reward model that the "
                    "server can steer with, with a report of what the judge says of the steering on held-out "
                    "prompts. Resumable: run it again with the same --out to continue.")
    _add_model_args(distill)
    distill.add_argument("--prompts", type=Path, required=True,
                         help="text file, one prompt a line (# comments); image-to-video: a .jsonl file of "
                              '{"prompt": ..., "image": PATH} lines, PATH relative to the file '
                              "(docs/image-to-video.md)")
    distill.add_argument("--judge", required=True, metavar="SPEC",
                         help="the judge to distil: classic, classic:OBJ,OBJ, clip:DIR, videoreward:DIR or "
                              "package.module:factory (docs/judges.md)")
    distill.add_argument("--held-out-judge", action="append", default=[], metavar="NAME=SPEC",
                         help="a judge the reward never sees that also scores the report's videos, repeatable")
    distill.add_argument("--objectives", default=None, help="comma-separated subset of the judge's objectives")
    distill.add_argument("--out", type=Path, required=True, help="output directory (the reward model is OUT/reward)")
    distill.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    distill.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's)")
    distill.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    distill.add_argument("--pool", type=int, default=4, help="unguided samples per prompt (default 4)")
    distill.add_argument("--test-share", type=float, default=0.2, help="share of prompts held out (default 0.2)")
    distill.add_argument("--tie-share", type=float, default=0.1,
                         help="a pair is a tie when the judge's scores differ by less than this share of the "
                              "objective's spread over the pool (default 0.1)")
    distill.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    distill.add_argument("--blocks", type=int, default=None, help="transformer blocks in the reward trunk (default 2)")
    distill.add_argument("--window", type=_window, default=None,
                         help="noise levels t_lo,t_hi whose sampler states are recorded and guided (default 0.2,0.8)")
    distill.add_argument("--strengths", type=_strengths, default=(2.0, 4.0, 8.0, 16.0),
                         help="guidance strengths tried on the tuning prompts (default 2,4,8,16)")
    distill.add_argument("--tune-prompts", type=int, default=4, help="training prompts used to tune (default 4)")
    distill.add_argument("--tune-seeds", type=int, default=2, help="seeds per tuning prompt (default 2)")
    distill.add_argument("--report-seeds", type=int, default=4, help="seeds per held-out prompt in the report (default 4)")
    distill.add_argument("--batch", type=int, default=8, help="samples per batch (default 8)")
    distill.add_argument("--fps", type=float, default=16.0, help="frame rate the judge assumes (default 16)")
    distill.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
    from guidance import demo
    from guidance.judges import load_judge, parse_named_spec
    from guidance.nrg import DEFAULT_WINDOW
    from guidance.train.distill import DistillConfig, Distiller, format_report, read_prompt_file
    from guidance.train.reward import TrainConfig

    prompts = read_prompt_file(args.prompts)
    family = _load(args)
    prompts.check_images(family)
    shape, steps = _shape_and_steps(args, family)
    family.check_shape(shape)
    objectives = None if args.objectives is None else tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    config = DistillConfig(
        prompts=prompts.prompts, images=prompts.images if prompts.has_images else (), shape=shape, steps=steps,
        judge_name=args.judge,
        objectives=objectives, pool=args.pool, test_share=args.test_share, tie_share=args.tie_share,
        batch=args.batch, window=args.window or DEFAULT_WINDOW,
        train=TrainConfig(epochs=args.epochs, num_blocks=args.blocks, trajectory_share=0.5),
        strengths=args.strengths, tune_prompts=args.tune_prompts, tune_seeds=args.tune_seeds,
        report_seeds=args.report_seeds)
    judge = load_judge(args.judge, str(family.device))
    held_out = {name: load_judge(spec, str(family.device))
                for name, spec in (parse_named_spec(item) for item in args.held_out_judge)}
    report = Distiller(family, judge, config, args.out, fps=args.fps, progress=not args.quiet,
                       held_out=held_out).run()
    print(format_report(report))
    print(f"reward model: {args.out / 'reward'}  (report: {args.out / 'report.json'})")
    print(f"serve it: nrg serve --model {args.model or demo.DEFAULT_MODEL_DIR} --reward {args.out / 'reward'} "
          f"--judge held_out={args.judge}")
