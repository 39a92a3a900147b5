"""What the demo model's VAE lets a clip show: the measured motion and sharpness of rendered clips,
of their VAE round trip (encode, decode) and of the model's own samples.

The demo metrics' motion scales are referenced to the round trip (``demo_world.metrics``, version 2);
this prints the figures they rest on (docs/demo.md, docs/benchmarks.md)::

    python -m benchmarks.demo_round_trip [--samples-per-prompt 4]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from demo_world import world
from demo_world.evaluate import TUNE_SEED_BASE
from demo_world.metrics import evaluate_clip


def _row(name: str, reports: list) -> str:
    def cell(field: str) -> str:
        values = [getattr(r, field) for r in reports]
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        return f"{p50:.3f} [{p10:.3f}, {p90:.3f}]"

    return f"| {name} ({len(reports)}) | {cell('jerk')} | {cell('area_cv')} | {cell('sharpness')} | " \
           f"{np.median([r.mq for r in reports]):.3f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples-per-prompt", type=int, default=4,
                        help="tuning seeds per held-out prompt for the model's samples (default 4: 32 clips)")
    args = parser.parse_args(argv)
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE
    from guidance.families import load_pipeline
    from guidance.sampler import SampleSpec, sample

    family = load_pipeline(DEFAULT_MODEL_DIR)
    prompts = world.all_prompts()[::3]
    clips = [world.render(p, TUNE_SEED_BASE + i) for i, p in enumerate(prompts)]  # every third prompt: 48
    decoded = []
    with torch.no_grad():
        for first in range(0, len(clips), 16):
            x = torch.from_numpy(np.stack(clips[first:first + 16])).float()
            decoded += list(family.decode(family.encode(x, DEFAULT_SHAPE), DEFAULT_SHAPE,
                                          [torch.Generator()] * len(x)).float().numpy())
    held_out = [p for _ in range(args.samples_per_prompt) for p in world.eval_prompts()]
    seeds = [TUNE_SEED_BASE + j for j in range(args.samples_per_prompt) for _ in world.eval_prompts()]
    samples = sample(family, [SampleSpec(p.text, seed=s) for p, s in zip(held_out, seeds)], DEFAULT_SHAPE, 20)
    print("| clips | J (px/frame^2), median [p10, p90] | area CV | sharpness R | median MQ |")
    print("|---|---|---|---|---|")
    print(_row("rendered", [evaluate_clip(c, p) for c, p in zip(clips, prompts)]))
    print(_row("their VAE round trip", [evaluate_clip(c, p) for c, p in zip(decoded, prompts)]))
    print(_row("the model's samples, held-out prompts",
               [evaluate_clip(c, p) for c, p in zip(samples.frames.float().numpy(), held_out)]))


if __name__ == "__main__":
    main()
