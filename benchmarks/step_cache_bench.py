"""``python -m benchmarks.step_cache_bench``: what first-block caching (``--step-cache``) buys and costs on the
demo world.

Per threshold, unguided and guided by the embedded reward (its recommended mode and strength, weights
``--objectives``): the denoiser calls it skipped, its time against the uncached run of the same clips, and
what the demo world's ground truth (``demo_world.metrics``: VQ, MQ, TA, never what the cache or the
guidance saw) says of its clips against the uncached clips of the same prompt and seed (mean difference
with a 95% interval) and, guided, of the guided clips against the unguided uncached ones (win rates, as
``nrg eval`` counts them), beside the same win rates without the cache.

Timing is interleaved: each batch (every report prompt at one seed) runs every setting, in an order rotated
from batch to batch, before the next batch starts; a setting's time multiple is the median over batches of
its batch time / the uncached batch time of the same guidance, in wall-clock seconds and in the process's CPU
seconds (which a machine busy with other work disturbs less).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from demo_world import evaluate as gt
from demo_world import world
from demo_world.metrics import OBJECTIVES

DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2)


def _batch(family, reward, cache, prompts: Sequence[str], seed: int, threshold: float, guidance, steps: int,
           shape) -> dict:
    from guidance.sample_types import SampleSpec
    from guidance.sampler import sample

    specs = [SampleSpec(p, seed=seed, guidance=guidance, cache_threshold=threshold) for p in prompts]
    began, cpu_began = time.perf_counter(), time.process_time()
    result = sample(family, specs, shape, steps, reward, step_cache=cache)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    calls = sum(2 * steps if family.uses_cfg(family.default_cfg) else steps for _ in prompts)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "calls": calls,
            "cached_calls": int(sum(result.cached_calls)),
            "truth": gt.score_clips(result.frames.numpy(), list(prompts))}


def _interval(differences: list[float]) -> list[float]:
    """Mean and the half-width of its 95% interval (normal approximation)."""
    mean = float(np.mean(differences))
    spread = float(np.std(differences, ddof=1)) if len(differences) > 1 else float("nan")
    half = 1.96 * spread / len(differences) ** 0.5
    return [mean, half]


def summarise(runs: dict[str, list[dict]], settings: list[tuple[str, float, bool]]) -> list[dict]:
    """One row per setting: calls skipped, time multiple, ground truth against uncached and against unguided."""
    rows = []
    for name, threshold, guided in settings:
        base = "guided@0" if guided else "unguided@0"
        mine, uncached, unguided = runs[name], runs[base], runs["unguided@0"]
        clips = [c for batch in mine for c in batch["truth"]]
        base_clips = [c for batch in uncached for c in batch["truth"]]
        row = {
            "setting": name, "threshold": threshold, "guided": guided,
            "calls": sum(b["calls"] for b in mine), "cached_calls": sum(b["cached_calls"] for b in mine),
            "time_multiple": statistics.median(b["seconds"] / u["seconds"] for b, u in zip(mine, uncached)),
            "cpu_time_multiple": statistics.median(b["cpu_seconds"] / u["cpu_seconds"] for b, u in zip(mine, uncached)),
            "truth_vs_uncached": {o: _interval([c[o] - u[o] for c, u in zip(clips, base_clips)]) for o in OBJECTIVES},
        }
        if guided:
            plain = [c for batch in unguided for c in batch["truth"]]
            row["win_vs_unguided"] = {o: w.to_json() for o, w in gt.paired_win_rates(clips, plain).items()}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| setting | calls skipped | time vs uncached (wall, CPU) | "
             + " | ".join(f"{o} vs uncached" for o in OBJECTIVES)
             + " | " + " | ".join(f"{o} win vs unguided" for o in OBJECTIVES) + " |",
             "|---" * (3 + 2 * len(OBJECTIVES)) + "|"]
    for row in rows:
        full = max(1, row["calls"] - row["cached_calls"])
        skipped = f"{row['cached_calls']}/{row['calls']} ({row['calls'] / full:.2f}x fewer full calls)"
        truth = [f"{m:+.3f} +/- {h:.3f}" for m, h in (row["truth_vs_uncached"][o] for o in OBJECTIVES)]
        wins = ([gt.win_cell(row["win_vs_unguided"][o]) for o in OBJECTIVES] if row["guided"]
                else ["-"] * len(OBJECTIVES))
        times = f"{row['time_multiple']:.2f}x, {row['cpu_time_multiple']:.2f}x"
        lines.append(f"| {row['setting']} | {skipped} | {times} | " + " | ".join(truth) + " | "
                     + " | ".join(wins) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cache_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    parser.add_argument("--seeds", type=int, default=2, help="report seeds, one batch of every prompt each")
    parser.add_argument("--prompts", type=int, default=None, help="the first N report prompts (default all)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default the demo model's)")
    parser.add_argument("--objectives", default="1:1:0", help="the guided rows' weights VQ:MQ:TA (default 1:1:0)")
    parser.add_argument("--output-file", type=Path, default=None, help="write the runs and the table as JSON")
    args = parser.parse_args(argv)

    import torch

    from guidance.demo import (
        DEFAULT_MODEL_DIR,
        DEFAULT_REWARD_DIR,
        DEFAULT_SHAPE,
        DEFAULT_STEPS,
    )
    from guidance.families import load_pipeline
    from guidance.nrg import defaults_for
    from guidance.reward_model import load_reward_model
    from guidance.step_cache import StepCache

    torch.manual_seed(0)
    family = load_pipeline(DEFAULT_MODEL_DIR)
    reward = load_reward_model(DEFAULT_REWARD_DIR, family)
    cache = StepCache(family)
    guidance = defaults_for(reward).complete(gt.parse_setting(args.objectives))
    prompts = [p.text for p in world.eval_prompts()][:args.prompts]
    steps = args.steps or DEFAULT_STEPS
    settings = [(f"{'guided' if guided else 'unguided'}@{threshold:g}", threshold, guided)
                for guided in (False, True) for threshold in (0.0, *args.thresholds)]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in settings}
    # The first calls pay one-time costs (allocations, kernel choices): not any setting's time.
    _batch(family, reward, cache, prompts[:1], world.EVAL_SEED_BASE, 0.0, guidance, 2, DEFAULT_SHAPE)
    for b in range(args.seeds):
        order = settings[b % len(settings):] + settings[:b % len(settings)]
        for name, threshold, guided in order:
            run = _batch(family, reward, cache, prompts, world.EVAL_SEED_BASE + b, threshold,
                         guidance if guided else None, steps, DEFAULT_SHAPE)
            runs[name].append(run)
            print(f"seed {b}: {name}: {run['seconds']:.1f} s, {run['cached_calls']}/{run['calls']} calls cached",
                  file=sys.stderr)
    rows = summarise(runs, [s for s in settings if s[1] > 0 or s[2]])
    print(f"step cache on the demo model: {len(prompts)} prompts x {args.seeds} seeds, {steps} steps, guided "
          f"{args.objectives} ({guidance.mode}, strength "
          f"{guidance.strength:g}); device {gt.device_text(str(family.device))}")
    print(table(rows))
    if args.output_file is not None:
        command = "python -m benchmarks.step_cache_bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        args.output_file.write_text(json.dumps({"command": command, "rows": rows, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
