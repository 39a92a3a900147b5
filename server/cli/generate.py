"""``nrg generate``: one video from a prompt (and, image-to-video, a first frame; video-to-video, a clip to start
from), optionally with reward guidance."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from guidance.attention_backends import ATTENTION_BACKENDS, DEFAULT_BACKEND
from guidance.nrg import MODES
from server.cli.common import _add_model_args, _load, _shape_and_steps, _size, _window, step_cache_threshold
from server.config import COMPILE_BACKENDS

if TYPE_CHECKING:  # torch and the models load only inside run()
    from server.unguided_twin import TwinComparison


def add_parser(sub) -> None:
    gen = sub.add_parser("generate", help="generate one video, optionally with reward guidance")
    _add_model_args(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's)")
    gen.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    gen.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    gen.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--reward", type=Path, default=None, help="reward model directory (from init-reward/train-reward)")
    gen.add_argument("--weights", default=None, help="objective weights, e.g. vq=1,mq=0.5,ta=0")
    gen.add_argument("--strength", type=float, default=None,
                     help="guidance strength (default: the reward model's recommended one)")
    gen.add_argument("--window", type=_window, default=None,
                     help="noise levels t_lo,t_hi to guide (default: the reward model's recommended window)")
    gen.add_argument("--mode", choices=MODES, default=None,
                     help="relative (push sized against the CFG term), sum (the paper's t/(1-t) rule), unit, or the "
                          "gradient-free best_of_n / fk (default: the reward model's recommended one)")
    gen.add_argument("--particles", type=int, default=None, help="copies run by best_of_n and fk (default 4)")
    gen.add_argument("--checkpoint", type=Path, default=None,
                     help="aligned checkpoint directory (LoRA or full weights, as nrg serve --checkpoint takes)")
    gen.add_argument("--judge", action="append", default=[], metavar="NAME=SPEC",
                     help="held-out judge to score the video with, repeatable (classic, clip:DIR, videoreward:DIR, "
                          "package.module:factory; docs/judges.md)")
    gen.add_argument("--compile", dest="compile_backend", nargs="?", const="inductor", choices=COMPILE_BACKENDS,
                     default=None, metavar="BACKEND",
                     help="torch.compile the transformer blocks (and the reward trunk's) with BACKEND (inductor when "
                          "the flag is given alone); the first steps compile, so it pays only for long videos "
                          "(docs/server.md, Making it fast)")
    gen.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, default=DEFAULT_BACKEND, metavar="NAME",
                     help="the denoiser's attention kernel, as nrg serve --attention-backend takes it (default "
                          f"{DEFAULT_BACKEND})")
    gen.add_argument("--step-cache", type=step_cache_threshold, default=0.0, metavar="THRESHOLD",
                     help="first-block caching on Wan models, as nrg serve --step-cache takes it: a denoiser call runs "
                          "only its first block when that block's residual moved by less than THRESHOLD since the "
                          "last full call (e.g. 0.05; default 0: off; not with --compile)")
    gen.add_argument("--image", type=Path, default=None,
                     help="image-to-video: the first frame (PNG, JPEG or WebP), resized to --size under the server's "
                          "rules (docs/server.md, Image-to-video); the model must take an image")
    gen.add_argument("--video", type=Path, default=None,
                     help="video-to-video: a clip (MP4 or WebM) to start from, noised to --denoise-strength; resampled "
                          "to --fps and --frames and resized to --size under the server's rules (docs/image-to-video.md)")
    gen.add_argument("--denoise-strength", type=float, default=None,
                     help="video-to-video: the share of the schedule run from the noised clip, in (0, 1] (default "
                          "0.8); 1 ignores the clip")
    gen.add_argument("--compare-unguided", action="store_true",
                     help="also run the same request unguided in the same batch (one more sample) and print what "
                          "guidance changed against it, flagging an objective whose reward rose while a --judge "
                          "objective of the same name fell (reward hacking; docs/judges.md)")
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--out", type=Path, required=True, help="output .mp4 or .npy")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    from guidance import demo
    from guidance.attention_backends import (
        check_attention_backend,
        set_attention_backend,
    )
    from guidance.nrg import defaults_for, parse_weights
    from guidance.output_checks import output_problems
    from guidance.precision import resolve_device
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample
    from guidance.step_cache import StepCache, refuse_with_compile
    from guidance.video_io import write_video
    from guidance.video_to_video import sample_start
    from server.judging import HeldOutJudges, load_judges, parse_judge_flags
    from server.unguided_twin import compare, unusable_twin

    if args.out.suffix not in (".mp4", ".npy"):
        raise ValueError(f"--out must end in .mp4 or .npy; got {args.out}")
    judge_specs = parse_judge_flags(args.judge)
    embedded = args.model is None
    if args.reward is None and embedded and demo.DEFAULT_REWARD_DIR.is_dir():
        args.reward = demo.DEFAULT_REWARD_DIR  # the embedded model's own trained reward, as the server uses
    if (args.weights or args.strength is not None or args.mode or args.window) and args.reward is None:
        raise ValueError("--weights/--strength/--mode/--window need --reward DIR (a reward model to guide with)")
    if args.compile_backend is not None:
        from guidance.compilation import check_backend

        check_backend(args.compile_backend, resolve_device(args.device))  # before the model loads
    check_attention_backend(args.attention_backend, resolve_device(args.device))
    refuse_with_compile(args.step_cache, args.compile_backend is not None)
    family = _load(args)
    judges = HeldOutJudges(load_judges(judge_specs, str(family.device)))
    shape, steps = _shape_and_steps(args, family)
    reward = load_reward_model(args.reward, family) if args.reward else None
    if reward is not None:
        source = "the embedded demo reward" if args.reward == demo.DEFAULT_REWARD_DIR else str(args.reward)
        print(f"reward model: {source} (objectives {', '.join(reward.objectives)})")
    set_attention_backend(family, args.attention_backend, reward)  # after the reward trunk's copy of the blocks
    if args.checkpoint is not None:
        from guidance.checkpoints import CheckpointRegistry

        # After the reward model: its trunk is copied from the base transformer, as in the server.
        CheckpointRegistry(family, {"checkpoint": args.checkpoint}).activate("checkpoint")
    if args.compile_backend is not None:
        from guidance.compilation import compile_model

        compile_model(family, reward, args.compile_backend)
    guidance = None
    if reward is not None and args.weights:
        guidance = defaults_for(reward).complete(parse_weights(args.weights), args.strength, args.window, args.mode,
                                                 args.particles)
        guidance.validate(reward.objectives)
    if args.compare_unguided and (guidance is None or not guidance.active):
        raise ValueError("--compare-unguided needs active guidance (--weights with a nonzero weight, and a nonzero "
                         "--strength)")
    image = video = None
    if args.image is not None and args.video is not None:
        raise ValueError("give --image (image-to-video) or --video (video-to-video), not both")
    if args.denoise_strength is not None and args.video is None:
        raise ValueError("--denoise-strength applies to video-to-video: give --video")
    if args.image is not None:
        from server.input_reference import image_file

        image = image_file(args.image, shape.width, shape.height)
    if args.video is not None:
        from server.input_video import video_file

        video = video_file(args.video, shape.width, shape.height, shape.frames, args.fps)
    step_cache = None
    if args.step_cache > 0:
        step_cache = StepCache(family, args.step_cache)
    spec = SampleSpec(args.prompt, args.negative_prompt, args.seed, args.cfg, guidance, image=image, video=video,
                      denoise_strength=args.denoise_strength, cache_threshold=args.step_cache)
    ran = steps - sample_start(spec, steps)  # a video's sample runs the last steps only
    specs = [spec, replace(spec, guidance=None)] if args.compare_unguided else [spec]
    result = sample(family, specs, shape, steps, reward, progress=not args.quiet, step_cache=step_cache)
    problems = output_problems(result, ran)
    problem = problems[0]
    if problem is not None:
        raise ValueError(f"generation failed, nothing written: {problem}")
    path = write_video(result.frames[0], args.out, fps=args.fps)
    from_video = f" from {args.video}: {ran} of" if video is not None else ""
    print(f"wrote {path} ({shape.frames} frames, {shape.width}x{shape.height},{from_video} {steps} steps, seed "
          f"{args.seed})")
    if step_cache is not None:
        print(f"step cache: {result.cached_calls[0]} of the denoiser calls ran only their first block")
    if result.rewards is not None:
        scores = ", ".join(f"{name}={value:.4f}" for name, value in zip(result.objectives, result.rewards[0].tolist()))
        print(f"optimised reward (what guidance pushed up), final latents: {scores}")
        if reward.calibration is not None:
            z = reward.calibration.z_scores(dict(zip(result.objectives, result.rewards[0].tolist())))
            print("as z-scores against unguided samples: " + ", ".join(f"{k}={v:+.2f}" for k, v in z.items()))
        if guidance is not None:
            print(f"guidance: mode {guidance.mode}, strength {guidance.strength:g}, window {list(guidance.window)}"
                  + (f", {guidance.particles} particles" if guidance.search else ""))
            print(f"guided steps: {result.guided_steps[0]}, skipped (non-finite gradient): {result.skipped_steps[0]}, "
                  f"cost vs unguided: {result.row_seconds[0].vs_unguided:.2f}x its measured time "
                  f"({result.denoiser_passes[0]} denoiser passes)")
    clips = len(specs)
    held_out = judges.score(result.frames, [args.prompt] * clips, [args.fps] * clips,
                            [[] if p else list(judges.judges) for p in problems])
    for name, scores in (held_out[0] or {}).items():
        print(f"held-out judge {name} (not optimised): " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    if args.compare_unguided:
        rewards = [dict(zip(result.objectives, row)) for row in result.rewards.tolist()]
        comparison = unusable_twin(problems[1]) if problems[1] else compare(
            guidance.weights, rewards[0], held_out[0], rewards[1], held_out[1])
        for line in _comparison_lines(comparison):
            print(line)


def _comparison_lines(comparison: TwinComparison) -> list[str]:
    """What guidance changed against the unguided twin, as ``nrg generate`` prints it."""
    if comparison.error is not None:
        return [f"unguided twin: {comparison.error}"]
    lines = ["unguided twin, optimised reward: " + ", ".join(f"{k}={v:.4f}" for k, v in comparison.rewards.items())]
    for change in comparison.changes:
        lines.append(f"vs unguided, {change.objective}: reward {change.reward_change:+.4g}, judge {change.judge} "
                     f"{change.judge_change:+.4g}" + ("  REWARD HACKING" if change.hacked else ""))
    if comparison.reward_hacking is None:
        lines.append("reward hacking: not judged (no --judge scores an objective guidance pushed up, by name)")
    elif not comparison.reward_hacking:
        lines.append("reward hacking: none (no judge of an objective guidance pushed up says it fell)")
    return lines
