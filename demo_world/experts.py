"""Expert demonstrations of the demo world for Diffusion-DRO: rendered clips are the crispest, exactly
prompt-following clips the world has (``demo_world.world.render``), so they are perfect experts.

``python -m demo_world.experts OUT_DIR [COUNT] [SEED]`` writes a scored-clips data set
(``clips.jsonl`` + ``.npy`` clips, rewards = the ground-truth metrics of each rendered clip) that
``nrg align --method diffusion-dro --data OUT_DIR`` trains on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from demo_world import world
from demo_world.metrics import evaluate


def write_demo_experts(out_dir: str | Path, count: int = 400, seed: int = 0) -> Path:
    """``count`` rendered clips of training prompts (never the held-out combinations), seeds below
    ``EVAL_SEED_BASE``; split by the default hash."""
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        prompt = world.sample_training_prompt(rng)
        clip_seed = int(rng.integers(0, world.EVAL_SEED_BASE))
        frames = world.render(prompt, clip_seed)
        name = f"clips/expert_{i:06d}.npy"
        np.save(out / name, frames.astype(np.float32))
        rows.append({"prompt": prompt.text, "clip": name, "rewards": evaluate(frames, prompt)})
    (out / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not (out / "dataset.json").is_file():
        (out / "dataset.json").write_text(json.dumps({"objectives": ["vq", "mq", "ta"],
                                                      "description": "rendered demo-world experts"}, indent=2) + "\n")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        raise SystemExit("usage: python -m demo_world.experts OUT_DIR [COUNT] [SEED]")
    print(write_demo_experts(args[0], *(int(a) for a in args[1:3])))
