"""What the demo model's VAE lets a clip show, and how much room its samples leave guidance.

Measures rendered clips, their VAE round trip (encode, decode) and the model's unguided samples of
the held-out prompts, and checks them against demo world v2's targets: a perfect render's round trip
keeps VQ and MQ >= 0.85; the samples read the prompt's colour / shape / direction >= 90 / 80 / 90% of
the time and their median VQ and MQ sit >= 0.3 below the round trip's (docs/demo.md)::

    python -m benchmarks.demo_round_trip [--model DIR] [--samples-per-prompt 4] [--seeds tune|report]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from demo_world import world
from demo_world.evaluate import TUNE_SEED_BASE
from demo_world.metrics import ClipReport, evaluate_clip

ROUND_TRIP_FLOOR = 0.85
READ_TARGETS = {"color": 0.90, "shape": 0.80, "direction": 0.90}
HEADROOM = 0.3


def _row(name: str, reports: list[ClipReport]) -> str:
    def cell(field: str) -> str:
        values = [getattr(r, field) for r in reports]
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        return f"{p50:.3f} [{p10:.3f}, {p90:.3f}]"

    read = " / ".join(f"{100 * np.mean([getattr(r, f'{part}_ok') for r in reports]):.0f}" for part in READ_TARGETS)
    return (f"| {name} ({len(reports)}) | {cell('jerk')} | {cell('area_cv')} | {cell('sharpness')} | "
            f"{np.median([r.vq for r in reports]):.3f} | {np.median([r.mq for r in reports]):.3f} | {read} |")


def target_lines(round_trip: list[ClipReport], samples: list[ClipReport]) -> list[str]:
    """One line per target: the figure, the bound and whether it is met."""
    lines = []

    def check(name: str, value: float, bound: float, unit: str = "") -> None:
        lines.append(f"{name}: {value:.3f}{unit} (target >= {bound}{unit}) {'met' if value >= bound else 'MISSED'}")

    for metric in ("vq", "mq"):
        ceiling = float(np.median([getattr(r, metric) for r in round_trip]))
        check(f"round trip median {metric.upper()}", ceiling, ROUND_TRIP_FLOOR)
        check(f"headroom of the samples' median {metric.upper()} below it",
              ceiling - float(np.median([getattr(r, metric) for r in samples])), HEADROOM)
    for part, bound in READ_TARGETS.items():
        check(f"samples reading the prompt's {part}", float(np.mean([getattr(r, f"{part}_ok") for r in samples])), bound)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline directory (default: the embedded demo)")
    parser.add_argument("--samples-per-prompt", type=int, default=4,
                        help="seeds per held-out prompt for the model's samples (default 4: 32 clips)")
    parser.add_argument("--seeds", choices=("tune", "report"), default="tune",
                        help="the samples' seeds: nrg eval's tuning seeds (default) or its report seeds")
    args = parser.parse_args(argv)
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE
    from guidance.families import load_pipeline
    from guidance.sampler import SampleSpec, sample

    family = load_pipeline(args.model or DEFAULT_MODEL_DIR)
    seed_base = TUNE_SEED_BASE if args.seeds == "tune" else world.EVAL_SEED_BASE
    prompts = world.all_prompts()[::3]
    clips = [world.render(p, seed_base + i) for i, p in enumerate(prompts)]  # every third prompt: 48
    decoded = []
    with torch.no_grad():
        for first in range(0, len(clips), 16):
            x = torch.from_numpy(np.stack(clips[first:first + 16])).float()
            decoded += list(family.decode(family.encode(x, DEFAULT_SHAPE), DEFAULT_SHAPE,
                                          [torch.Generator()] * len(x)).float().numpy())
    held_out = [p for _ in range(args.samples_per_prompt) for p in world.eval_prompts()]
    seeds = [seed_base + j for j in range(args.samples_per_prompt) for _ in world.eval_prompts()]
    samples = sample(family, [SampleSpec(p.text, seed=s) for p, s in zip(held_out, seeds)], DEFAULT_SHAPE, 20)
    rendered = [evaluate_clip(c, p) for c, p in zip(clips, prompts)]
    round_trip = [evaluate_clip(c, p) for c, p in zip(decoded, prompts)]
    sampled = [evaluate_clip(c, p) for c, p in zip(samples.frames.float().numpy(), held_out)]
    print(f"model: {args.model or 'embedded demo'}; seeds: {args.seeds}")
    print("| clips | J (px/frame^2), median [p10, p90] | area CV | sharpness R | median VQ | median MQ | "
          "colour / shape / direction read (%) |")
    print("|---|---|---|---|---|---|---|")
    print(_row("rendered", rendered))
    print(_row("their VAE round trip", round_trip))
    print(_row("the model's samples, held-out prompts", sampled))
    print()
    for line in target_lines(round_trip, sampled):
        print(line)


if __name__ == "__main__":
    main()
