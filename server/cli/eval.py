"""``nrg eval``: Flow-NRG on the demo world, guided vs unguided, by ground-truth metrics (docs/demo.md);
with ``--checkpoint``, aligned checkpoints vs the base model (docs/align.md); with ``--prompts FILE``,
``--calibrate`` and ``--tune`` of any model and reward, judged by a judge of the user's (docs/your-model.md,
``server.cli.eval_own_model``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from guidance.nrg import MODES
from server.cli.common import DTYPES, _size, _window

#: Flags of ``--prompts FILE`` alone (your own model), by their ``args`` name: None when not given.
OWN_MODEL_FLAGS = {"judge": "--judge", "objective_map": "--objective-map", "report_seeds": "--report-seeds",
                   "tie_share": "--tie-share", "size": "--size", "frames": "--frames", "dtype": "--dtype",
                   "batch": "--batch", "fps": "--fps"}
#: Flags of the demo world's table alone.
DEMO_FLAGS = {"settings": "--settings", "figures": "--figures", "benchmarks": "--benchmarks", "oracle": "--oracle"}


def _prompts(text: str) -> int | Path:
    """A number: the first N of the demo's held-out prompts; anything else: a prompt file of your own."""
    return int(text) if text.strip().lstrip("+-").isdigit() else Path(text)


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="Flow-NRG on the demo world: guided vs unguided, ground-truth metrics; "
                                     "--calibrate and --tune of any model with --prompts FILE")
    ev.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    ev.add_argument("--reward", type=Path, default=None, help="reward model (default: the embedded demo reward)")
    ev.add_argument("--settings", default=None,
                    help="comma-separated VQ:MQ:TA weight settings (default: the paper's Table 5 rows, "
                         "1:0:0, 0:1:0 and 1:1:1)")
    ev.add_argument("--strengths", default=None,
                    help="comma-separated guidance strengths (default: the reward model's recommended one)")
    ev.add_argument("--prompts", type=_prompts, default=None, metavar="N|FILE",
                    help="a number: the first N held-out demo prompts (default: all 8); a file: your own prompts, "
                         "one a line (# comments), to --calibrate or --tune any model and reward")
    ev.add_argument("--seeds", type=int, default=None,
                    help="seeds per prompt (default 12, i.e. 96 clips per row; 4 with --tune or --calibrate, "
                         "the tuning or calibration seeds)")
    ev.add_argument("--steps", type=int, default=None, help="denoising steps (default: the demo's 20)")
    ev.add_argument("--window", type=_window, default=None,
                    help="noise levels t_lo,t_hi to guide (default: the reward model's recommended window)")
    ev.add_argument("--mode", choices=MODES, default=None, help="guidance mode (default: the reward model's)")
    ev.add_argument("--tune", action="store_true",
                    help="choose the strength on tuning seeds (the single-objective rows; never the report's seeds); "
                         "with --prompts FILE, judged by --judge")
    ev.add_argument("--calibrate", action="store_true",
                    help="only sample unguided clips on tuning seeds and measure the reward's score statistics")
    ev.add_argument("--write-defaults", action="store_true",
                    help="with --tune: store the chosen mode, strength and window in the reward model's config; "
                         "with --tune or --calibrate: also its calibration (score mean and std on unguided clips)")
    ev.add_argument("--figures", type=Path, default=None,
                    help="directory for the contact sheet and trade-off plot PNGs")
    ev.add_argument("--oracle", action="store_true",
                    help="guide with the differentiable oracle of the ground truth instead of the reward model "
                         "(the ceiling; slow: every guided step decodes and backpropagates through the VAE)")
    ev.add_argument("--device", default=None)
    ev.add_argument("--output", type=Path, default=None, help="write the full report as JSON")
    ev.add_argument("--benchmarks", type=Path, default=None,
                    help="append the table with its command, device and date to this file (e.g. docs/benchmarks.md)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                    help="compare this aligned checkpoint with the base model, with and without guidance, "
                         "instead of the guidance table (repeatable; docs/align.md)")
    ev.add_argument("--checkpoint-guidance", default="0:1:0", metavar="VQ:MQ:TA",
                    help="with --checkpoint: the guidance setting of the '+ guidance' configs ('none': no guided "
                         "configs; default 0:1:0, strength from --strengths or the reward model's default)")
    al = ev.add_argument_group("every nrg align method side by side (--align; docs/align.md, 'The side-by-side table')")
    al.add_argument("--align", type=Path, default=None, metavar="OUT_DIR",
                    help="train every alignment method with one budget into OUT_DIR (skipping finished runs), "
                         "then judge each against the base model, its drift and the IS-DAA curve")
    al.add_argument("--align-pairs", type=Path, default=Path("out/demo-pairs"), help="nrg demo make-pairs data set")
    al.add_argument("--align-groups", type=Path, default=Path("out/demo-groups"), help="nrg demo annotate data set")
    al.add_argument("--align-experts", type=Path, default=Path("out/demo-experts"),
                    help="rendered experts (python -m demo_world.experts DIR)")
    al.add_argument("--align-cpu-budget", type=float, default=300.0, metavar="SECONDS",
                    help="CPU seconds of training steps of every method (default 300)")
    al.add_argument("--align-steps", type=int, default=400, help="the most optimizer steps of a method (default 400)")
    al.add_argument("--curve-seeds", type=int, default=6, help="report seeds per prompt of each curve point (default 6)")
    al.add_argument("--jobs", type=int, default=2, help="training runs at once, one thread each (default 2)")
    ev.add_argument("--checkpoint-seeds", choices=("report", "tune"), default="report",
                    help="with --checkpoint: the report seeds (default) or the tuning seeds")
    own = ev.add_argument_group("your own model, reward and prompts (--prompts FILE; docs/your-model.md)")
    own.add_argument("--judge", default=None, metavar="NAME=SPEC",
                     help="with --tune: the held-out judge that chooses the strength, never the reward being tuned "
                          "(classic, classic:OBJ,OBJ, clip:DIR, videoreward:DIR or package.module:factory; "
                          "docs/judges.md)")
    own.add_argument("--objective-map", action="append", default=None, metavar="REWARD=JUDGE,...",
                     help="the judge objective that verifies each reward objective, e.g. bright=exposure "
                          "(repeatable; default: the same name)")
    own.add_argument("--report-seeds", type=int, default=None,
                     help="with --tune: seeds per prompt of the report on seeds no choice looked at (default 4)")
    own.add_argument("--tie-share", type=float, default=None,
                     help="a guided and unguided pair is a tie when the judge's scores differ by less than this "
                          "share of their unguided spread (default 0.1)")
    own.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    own.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's)")
    own.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default: auto)")
    own.add_argument("--batch", type=int, default=None, help="clips sampled together (default 8)")
    own.add_argument("--fps", type=float, default=None, help="frame rate the judge assumes (default 16)")


def _given(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    return [flag for name, flag in flags.items() if getattr(args, name) not in (None, False)]


def run(args: argparse.Namespace) -> None:
    strengths = None
    if args.strengths is not None:
        try:
            strengths = [float(w) for w in args.strengths.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"--strengths must be comma-separated numbers; got {args.strengths!r}") from None
    if isinstance(args.prompts, Path):
        if args.checkpoint or args.align is not None:
            raise ValueError("--prompts FILE is for --calibrate and --tune of your own model; --checkpoint and "
                             "--align run on the demo's prompts (--prompts N)")
        demo_only = _given(args, DEMO_FLAGS)
        if demo_only:
            raise ValueError(f"{', '.join(demo_only)}: the demo world's table only; with --prompts FILE, nrg eval "
                             "runs --calibrate or --tune")
        from server.cli import eval_own_model

        eval_own_model.run(args, strengths)
        return
    own_only = _given(args, OWN_MODEL_FLAGS)
    if own_only:
        raise ValueError(f"{', '.join(own_only)}: for your own prompts; give --prompts FILE (one prompt a line)")
    _eval_demo(args, strengths)


def _eval_demo(args: argparse.Namespace, strengths: list[float] | None) -> None:
    """The demo world: its held-out prompts, its vq/mq/ta objectives and its ground truth as the judge."""
    from demo_world import evaluate
    from guidance.demo import DEFAULT_REWARD_DIR

    if args.checkpoint:
        _eval_checkpoints(args, strengths)
        return
    if args.align is not None:
        _eval_align(args)
        return
    if args.write_defaults and not (args.tune or args.calibrate):
        raise ValueError("--write-defaults stores what --tune or --calibrate measures; give one of them too")
    if args.tune and args.calibrate:
        raise ValueError("--tune already calibrates; give --tune or --calibrate, not both")
    if args.tune and not strengths:
        raise ValueError("--tune needs --strengths to choose from, e.g. --strengths 1,2,3,5")
    if args.oracle and (args.tune or args.calibrate):
        raise ValueError("--oracle measures the ceiling of guidance; it does not tune or calibrate the reward model")
    common = dict(model=args.model, reward=args.reward, prompts=args.prompts, steps=args.steps, window=args.window,
                  mode=args.mode, device=args.device, progress=not args.quiet, command=evaluate.command_line(args.argv),
                  figures=args.figures, **({"oracle": True} if args.oracle else {}))
    reward_dir = args.reward or DEFAULT_REWARD_DIR
    if args.calibrate:
        report = evaluate.calibrate(seeds=args.seeds or 4, **common)
        print(f"calibration: {report['calibration']}")
    elif args.tune:
        report, best = evaluate.tune(strengths, seeds=args.seeds or 4, **common)
        print(evaluate.format_table(report))
        print(f"chosen strength: {best:g} (mode {report['mode']}, window {report['window']})")
        if args.write_defaults:
            from guidance.nrg import GuidanceDefaults
            from guidance.reward_model import write_guidance_defaults

            source = (f"nrg eval --tune, {report['date']}: seeds {report['seeds'][0]}..{report['seeds'][-1]}, "
                      f"scores {report['tuning_scores']}")
            chosen = GuidanceDefaults(report["mode"], best, tuple(report["window"]), source)
            print(f"wrote guidance_defaults to {write_guidance_defaults(reward_dir, chosen)}")
    else:
        settings = [s.strip() for s in (args.settings or ",".join(evaluate.DEFAULT_SETTINGS)).split(",") if s.strip()]
        report = evaluate.run_eval(settings=settings, strengths=strengths, seeds=args.seeds or evaluate.DEFAULT_SEEDS,
                                   **common)
        print(evaluate.format_table(report))
    if args.write_defaults and report["calibration"] is None:
        print("no calibration written: it needs at least 2 unguided clips (more --prompts or --seeds)")
    elif args.write_defaults:
        from guidance.reward_model import RewardCalibration, write_calibration

        calibration = RewardCalibration.from_json(report["calibration"], report["objectives"], "report")
        print(f"wrote calibration to {write_calibration(reward_dir, calibration)}")
    if args.output:
        print(f"wrote {evaluate.write_json(report, args.output)}")
    if args.benchmarks and report["rows"]:
        print(f"appended the table to {evaluate.append_benchmarks(args.benchmarks, report)}")


def _eval_checkpoints(args: argparse.Namespace, strengths: list[float] | None) -> None:
    """``nrg eval --checkpoint NAME=DIR``: aligned vs base, with and without guidance (demo_world/compare.py)."""
    from demo_world import compare, evaluate

    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint expects NAME=DIR; got {item!r}")
        checkpoints[name] = Path(path)
    if strengths is not None and len(strengths) != 1:
        raise ValueError(f"with --checkpoint, give one --strengths value; got {strengths}")
    setting = None if args.checkpoint_guidance == "none" else args.checkpoint_guidance
    report = compare.run_checkpoint_eval(
        checkpoints, model=args.model, reward=args.reward, setting=setting,
        strength=None if strengths is None else strengths[0], prompts=args.prompts,
        seeds=args.seeds or evaluate.DEFAULT_SEEDS, seed_set=args.checkpoint_seeds, steps=args.steps,
        device=args.device, progress=not args.quiet, command=evaluate.command_line(args.argv),
    )
    print(compare.format_checkpoint_table(report))
    if args.output:
        print(f"wrote {evaluate.write_json(report, args.output)}")
    if args.benchmarks:
        path = Path(args.benchmarks)
        text = path.read_text() if path.is_file() else evaluate.BENCHMARKS_HEADER
        path.write_text(text.rstrip("\n") + "\n\n" + compare.checkpoint_benchmark_section(report))
        print(f"appended the table to {path}")


def _eval_align(args: argparse.Namespace) -> None:
    """``nrg eval --align OUT_DIR``: every alignment method on one budget (demo_world/align_table.py)."""
    from demo_world import align_table, evaluate
    from guidance.demo import DEFAULT_REWARD_DIR

    if args.align_steps < 1 or args.jobs < 1 or not args.align_cpu_budget > 0:
        raise ValueError(f"--align-steps and --jobs must be >= 1 and --align-cpu-budget > 0; got {args.align_steps}, "
                         f"{args.jobs}, {args.align_cpu_budget}")
    inputs = align_table.TableInputs(pairs=args.align_pairs, groups=args.align_groups, experts=args.align_experts,
                                     out=args.align, reward=args.reward or DEFAULT_REWARD_DIR, model=args.model)
    report = align_table.build_table(inputs, steps=args.align_steps, cpu_budget_s=args.align_cpu_budget, jobs=args.jobs,
                                     seeds=args.seeds or evaluate.DEFAULT_SEEDS, curve_seeds=args.curve_seeds,
                                     progress=not args.quiet, command_text=evaluate.command_line(args.argv))
    print(align_table.format_table(report))
    if args.output:
        print(f"wrote {evaluate.write_json(report, args.output)}")
    if args.benchmarks:
        path = Path(args.benchmarks)
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + align_table.benchmark_section(report))
        print(f"appended the table to {path}")
