"""``nrg eval --calibrate`` and ``nrg eval --tune`` with ``--prompts FILE``: any pipeline, any reward and its
own objectives, a judge of the user's choosing (``guidance.tuning``; docs/your-model.md).

What the demo's ``nrg eval`` measures with the demo world's ground truth, measured here for a user's own
model: the reward's calibration on unguided clips of the prompts, and the guidance defaults chosen by a
held-out judge (``--judge NAME=SPEC``) on tuning seeds, reported on other seeds. ``--write-defaults``
stores both in the reward's ``reward_config.json``, where ``nrg serve`` and ``nrg generate`` read them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
from pathlib import Path

#: What ``--tune`` and ``--calibrate`` run with where a flag is not given.
DEFAULT_SEEDS = 4
DEFAULT_REPORT_SEEDS = 4
DEFAULT_TIE_SHARE = 0.1
DEFAULT_BATCH = 8


def _check_flags(args: argparse.Namespace, strengths: list[float] | None) -> None:
    """Refuse what this path cannot do, naming the flag, before anything heavy is loaded."""
    if args.tune == args.calibrate:
        raise ValueError("with --prompts FILE, nrg eval runs --calibrate or --tune (one of them)")
    if args.reward is None:
        raise ValueError("--reward RM_DIR is required with --prompts FILE: the reward to calibrate or tune")
    if args.calibrate:
        tune_only = [flag for flag, value in (("--judge", args.judge), ("--objective-map", args.objective_map),
                                              ("--strengths", strengths), ("--report-seeds", args.report_seeds),
                                              ("--tie-share", args.tie_share), ("--fps", args.fps))
                     if value is not None]
        if tune_only:
            raise ValueError(f"{', '.join(tune_only)}: for --tune; --calibrate judges nothing, it measures the "
                             "reward on unguided clips")
        return
    if not strengths:
        raise ValueError("--tune needs --strengths to choose from, e.g. --strengths 1,2,3,5")
    if args.judge is None:
        raise ValueError("--tune with --prompts FILE needs --judge NAME=SPEC, the held-out judge that chooses the "
                         "strength (e.g. --judge quality=classic): a reward never judges its own steering")


def _write_report(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path


def _or_default(value, default):
    """A flag's value, else its default: a given 0 stays 0, for the validation to name."""
    return default if value is None else value


def run(args: argparse.Namespace, strengths: list[float] | None) -> None:
    from guidance.demo import DEFAULT_MODEL_DIR
    from guidance.families import load_pipeline
    from guidance.judges import DEFAULT_FPS, NamedJudge, load_judge, parse_named_spec
    from guidance.nrg import defaults_for
    from guidance.precision import configure_matmul, resolve_device, resolve_dtype
    from guidance.reward_model import (
        load_reward_model,
        read_reward_config,
        write_calibration,
        write_guidance_defaults,
    )
    from guidance.train.distill import read_prompts
    from guidance.tuning.calibrate import calibrate
    from guidance.tuning.clips import ClipSettings
    from guidance.tuning.objective_map import parse_objective_map, resolve_objective_map
    from guidance.tuning.table import format_outcome
    from guidance.tuning.tune import TuneConfig, tune
    from server.cli.common import _shape_and_steps, refuse_image_to_video

    _check_flags(args, strengths)
    if not args.prompts.is_file():
        raise FileNotFoundError(f"--prompts {args.prompts}: no such file (a text file, one prompt a line)")
    prompts = read_prompts(args.prompts)
    objectives = read_reward_config(args.reward)["objectives"]
    device = resolve_device(args.device)
    judge = objective_map = None
    if args.tune:
        name, spec = parse_named_spec(args.judge)
        judge = NamedJudge(name, spec, load_judge(spec, str(device)))
        objective_map = resolve_objective_map(objectives, name, judge.objectives,
                                              parse_objective_map(args.objective_map or []))
    configure_matmul(device)
    model_dir = args.model or DEFAULT_MODEL_DIR
    family = refuse_image_to_video(load_pipeline(model_dir, device=device,
                                                 dtype=resolve_dtype(args.dtype or "auto", device)), "nrg eval")
    reward = load_reward_model(args.reward, family)
    shape, steps = _shape_and_steps(args, family)
    family.check_shape(shape)
    clips = ClipSettings(shape, steps, _or_default(args.batch, DEFAULT_BATCH), _or_default(args.fps, DEFAULT_FPS))
    seeds = _or_default(args.seeds, DEFAULT_SEEDS)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = {"command": "nrg " + " ".join(shlex.quote(a) for a in args.argv), "date": date, "model": str(model_dir),
              "reward": str(args.reward), "objectives": list(reward.objectives), "steps": steps,
              "shape": [shape.width, shape.height, shape.frames]}
    if args.calibrate:
        calibration = calibrate(family, reward, prompts, seeds, clips, progress=not args.quiet)
        report["calibration"] = calibration.to_json()
        print(f"calibration: {calibration.to_json()}")
    else:
        defaults = defaults_for(reward)
        window = tuple(args.window or defaults.window)
        config = TuneConfig(prompts, tuple(strengths), args.mode or defaults.mode, window, clips, seeds,
                            _or_default(args.report_seeds, DEFAULT_REPORT_SEEDS),
                            _or_default(args.tie_share, DEFAULT_TIE_SHARE))
        outcome = tune(family, reward, judge, objective_map, config, progress=not args.quiet)
        report.update(outcome.to_json(), judge_spec=judge.spec)
        calibration = outcome.calibration
        print(format_outcome(outcome))
        if outcome.chosen is not None:
            print(f"chosen strength: {outcome.chosen:g} (mode {config.mode}, window {list(config.window)})")
        chosen = outcome.defaults(f"nrg eval --tune, {date}: judged by {judge.name}={judge.spec}, tuning seeds "
                                  f"{outcome.tune_seeds[0]}..{outcome.tune_seeds[-1]}, net share per strength "
                                  + ", ".join(f"{s.strength:g}: {s.net_share:+.3f}" for s in outcome.scores))
        if args.write_defaults and chosen is not None:
            print(f"wrote guidance_defaults to {write_guidance_defaults(args.reward, chosen)}")
    if args.write_defaults and calibration is None:
        print("no calibration written: it needs at least 2 unguided clips (more prompts or --seeds)")
    elif args.write_defaults:
        print(f"wrote calibration to {write_calibration(args.reward, calibration)}")
    if args.output:
        print(f"wrote {_write_report(report, args.output)}")
