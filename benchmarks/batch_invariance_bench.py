"""``python -m benchmarks.batch_invariance_bench``: what ``--batch-invariant`` costs and what the default gives.

A batch of four samples (guided, unguided, another CFG scale, a search row) runs in both modes in
interleaved rounds on one machine: the default (each expert's rows in one denoiser call) and
batch-invariant (one row per call). Printed: each mode's median batch time and their ratio, and for each
mode how far each sample's frames and latents in the batch are from the same sample alone (the bound
docs/server.md states). Frames are compared as the uint8 levels the encoder receives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _specs():
    from guidance.nrg import GuidanceSpec
    from guidance.sample_types import SampleSpec

    return [SampleSpec("a red circle moving right", seed=7, guidance=GuidanceSpec({"vq": 1.0, "mq": 1.0}, 8.0)),
            SampleSpec("a blue square moving up", seed=8),
            SampleSpec("a green triangle moving left", seed=9, cfg_scale=3.0),
            SampleSpec("a yellow circle moving down", seed=10,
                       guidance=GuidanceSpec({"ta": 1.0}, 8.0, (0.2, 0.8), "best_of_n", 2))]


def _run(family, reward, shape, steps: int, specs, batch_invariant: bool):
    from guidance.batch_state import BatchState

    batch = BatchState(family, shape, reward, batch_invariant=batch_invariant)
    batch.add(specs, steps, range(len(specs)))
    for _ in range(steps):
        batch.step()
    return batch.pop_finished()


def measure(model: Path | None, reward_dir: Path | None, steps: int, rounds: int) -> dict[str, Any]:
    import torch

    from guidance import demo
    from guidance.families import load_pipeline
    from guidance.reward_model import load_reward_model
    from guidance.video_io import frames_to_uint8

    family = load_pipeline(model or demo.DEFAULT_MODEL_DIR)
    reward = load_reward_model(reward_dir or demo.DEFAULT_REWARD_DIR, family)
    shape, specs = demo.DEFAULT_SHAPE, _specs()
    modes = {"default": False, "batch_invariant": True}
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    batched: dict[str, Any] = {}
    for _ in range(rounds):
        for name, invariant in modes.items():
            start = time.perf_counter()
            batched[name] = _run(family, reward, shape, steps, specs, invariant)
            seconds[name].append(time.perf_counter() - start)
    distance: dict[str, dict[str, float]] = {}
    for name, invariant in modes.items():
        frame_max, frame_share, latent_max = 0, 0.0, 0.0
        for i, spec in enumerate(specs):
            alone = _run(family, reward, shape, steps, [spec], invariant)
            a = frames_to_uint8(alone.frames[0]).astype(int)
            b = frames_to_uint8(batched[name].frames[i]).astype(int)
            frame_max = max(frame_max, int(abs(a - b).max()))
            frame_share = max(frame_share, float((a != b).mean()))
            latent_max = max(latent_max, float((alone.latents[0] - batched[name].latents[i]).abs().max()))
        distance[name] = {"frames_max_levels": frame_max, "frames_share_differing": frame_share,
                          "latents_max_abs": latent_max}
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {"steps": steps, "rounds": rounds, "batch": len(specs), "shape": [shape.frames, shape.height, shape.width],
            "median_batch_s": median, "cost_ratio": median["batch_invariant"] / median["default"],
            "alone_vs_batch": distance, "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_invariance_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="diffusers directory (default: the embedded demo)")
    parser.add_argument("--reward", type=Path, default=None, help="reward model (default: the demo's)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both modes (default 3)")
    parser.add_argument("--output-file", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args.model, args.reward, args.steps, args.rounds)
    print(f"batch of {result['batch']} ({result['steps']} steps), median of {result['rounds']} interleaved rounds:")
    for name, value in result["median_batch_s"].items():
        d = result["alone_vs_batch"][name]
        print(f"  {name:<16} {value:7.2f} s   alone vs batch: frames max {d['frames_max_levels']} levels, "
              f"{100 * d['frames_share_differing']:.4f}% of values differ; latents max |diff| {d['latents_max_abs']:.2e}")
    print(f"cost of batch-invariant: {result['cost_ratio']:.2f}x the default batch time")
    if args.output_file:
        args.output_file.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
