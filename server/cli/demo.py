"""``nrg demo train|make-pairs|diagnose``: the synthetic demo world (docs/demo.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="the synthetic demo world: train its model, make preference pairs")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)

    train = demo_sub.add_parser("train", help="train the demo Wan pipeline on the synthetic world (CPU)")
    train.add_argument("--out", type=Path, default=Path("out/demo-pipeline"), help="output diffusers directory")
    train.add_argument("--recipe", choices=("v1", "v2"), default="v1",
                       help="v1: the embedded model's settings; v2: demo world v2 (footage of varied quality, "
                            "a wider VAE; fixed step counts)")
    train.add_argument("--minutes", type=float, default=None,
                       help="wall-clock budget (v1's default 45 also sets the step counts; v2's is 100)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--vae-steps", type=int, default=None, help="override the VAE step count")
    train.add_argument("--dit-steps", type=int, default=None, help="override the transformer step count")
    train.add_argument("--latent-clips", type=int, default=None, help="clips pre-encoded for the transformer")
    train.add_argument("--check-clips", type=int, default=None, help="held-out clips scored at the end (0: none)")
    train.add_argument("--vae-from", type=Path, default=None,
                       help="reuse the trained VAE of an earlier run's output directory (same seed: identical)")
    train.add_argument("--transformer-from", type=Path, default=None,
                       help="train further the transformer of an earlier run's output directory (its VAE too)")
    train.add_argument("--dit-lr", type=float, default=None, help="the transformer's peak learning rate")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    pairs = demo_sub.add_parser("make-pairs", help="sample the demo model and write ground-truth-labelled preference pairs")
    pairs.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    pairs.add_argument("--out", type=Path, required=True, help="data set directory (docs/reward_training.md format)")
    pairs.add_argument("--pairs", type=int, default=640,
                       help="prompt draws (default 640); each gives every pair of its --pool samples")
    pairs.add_argument("--pool", type=int, default=2,
                       help="samples per prompt draw, all of whose K(K-1)/2 pairs are written (default 2: one pair)")
    pairs.add_argument("--contrastive", action="store_true",
                       help="also one prompt-contrastive pair per sample (the clip under its prompt vs a changed one)")
    pairs.add_argument("--states", action="store_true",
                       help="record each sample's sampler states in the default guidance window with its latents "
                            "(for nrg train-reward --trajectory-share)")
    pairs.add_argument("--steps", type=int, default=None, help="denoising steps (default: the demo's 20)")
    pairs.add_argument("--batch", type=int, default=32, help="samples per sampler batch (default 32)")
    pairs.add_argument("--device", default="cpu")
    pairs.add_argument("--quiet", action="store_true", help="no progress bar")

    votes = demo_sub.add_parser("annotate", help="re-label a make-pairs data set as three annotator groups would "
                                                 "(accurate, noisy, biased) for Diff-UAPA")
    votes.add_argument("--data", type=Path, required=True, help="a `nrg demo make-pairs` data set")
    votes.add_argument("--out", type=Path, required=True, help="output data set directory")
    votes.add_argument("--seed", type=int, default=0, help="seed of the noisy group's flips")

    diag = demo_sub.add_parser("diagnose", help="cosine between a reward model's input gradients and the "
                                                "differentiable oracle's, per noise level")
    diag.add_argument("--model", type=Path, default=None, help="pipeline directory (default: embedded demo)")
    diag.add_argument("--reward", type=Path, default=None, help="reward model (default: the embedded demo reward)")
    diag.add_argument("--seeds", type=int, default=4, help="tuning seeds per held-out prompt (default 4: 32 clips)")
    diag.add_argument("--steps", type=int, default=None, help="denoising steps of the samples (default 20)")
    diag.add_argument("--device", default="cpu")
    diag.add_argument("--output", type=Path, default=None, help="write the report as JSON")


def run(args: argparse.Namespace) -> None:
    if args.demo_command == "train":
        from demo_world.train import TrainConfig, train_demo

        given = {"minutes": args.minutes, "vae_steps": args.vae_steps, "dit_steps": args.dit_steps}
        cfg = TrainConfig.recipe(args.recipe, seed=args.seed, threads=args.threads,
                                 **{k: v for k, v in given.items() if v is not None})
        if args.latent_clips is not None:
            cfg.latent_clips = args.latent_clips
        if args.check_clips is not None:
            cfg.check_clips = args.check_clips
        if args.vae_from is not None:
            cfg.vae_from = str(args.vae_from)
        if args.transformer_from is not None:
            cfg.transformer_from = str(args.transformer_from)
        if args.dit_lr is not None:
            cfg.dit_lr = args.dit_lr
        summary = train_demo(args.out, cfg, progress=not args.quiet)
        print(f"wrote demo pipeline to {args.out} in {summary['total_minutes']} min")
    elif args.demo_command == "diagnose":
        from demo_world.diagnose import format_gradient_report, run_diagnostic

        report = run_diagnostic(args.model, args.reward, args.seeds, args.steps, args.device)
        print(format_gradient_report(report))
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=1))
            print(f"wrote {args.output}")
    elif args.demo_command == "annotate":
        from demo_world.annotators import annotate

        summary = annotate(args.data, args.out, args.seed)
        print(f"wrote {summary['lines']} votes of groups {', '.join(summary['groups'])} to {args.out}")
    elif args.demo_command == "make-pairs":
        from demo_world.pairs import make_pairs

        summary = make_pairs(args.out, args.pairs, args.model, args.steps, args.batch, args.device, not args.quiet,
                             args.pool, args.contrastive, args.states)
        print(f"wrote {summary['pairs']} pairs to {args.out} (splits {summary['splits']}; "
              f"sampling {summary['sample_seconds']} s)")
        for objective, counts in summary["labels"].items():
            print(f"  {objective}: {counts}")
