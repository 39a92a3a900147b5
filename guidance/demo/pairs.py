"""Preference pairs labelled by the demo world's ground truth (``nrg demo make-pairs``).

Each pair is two samples of the demo model for one prompt with two seeds. Each objective is labelled
from the ground-truth metrics of the decoded clips (``guidance.demo.metrics``): "A" or "B" for the
clip with the higher score, "tie" when the scores differ by less than ``TIE_MARGIN`` (TA moves in
steps of 1/3, so its margin makes it a tie exactly when both clips get the same TA). The data set
(format: docs/reward_training.md) holds the final latents of the samples (what the sampler works in),
so ``nrg train-reward`` needs no VAE pass. The same directory is also a scored-clips data set
(``clips.jsonl``: every sample with its three ground-truth scores, for ``nrg align --method flow-rwr``).

Prompts: pair i takes prompt i of a fixed cycle through every prompt of the grammar; pairs of the
world's held-out combinations go to the ``test`` split, all others to ``train`` (so held-out accuracy
is measured on exactly the prompts ``nrg eval`` guides on, with other seeds). Seeds are
``PAIR_SEED_BASE + 2 i`` and ``+ 2 i + 1``, below the evaluation seeds.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from guidance.demo import world
from guidance.demo.metrics import OBJECTIVES, evaluate

#: |score_A - score_B| below this is a tie.
TIE_MARGIN = {"vq": 0.05, "mq": 0.05, "ta": 0.1}
PAIR_SEED_BASE = 500_000


def label(a: float, b: float, margin: float) -> str:
    if abs(a - b) < margin:
        return "tie"
    return "A" if a > b else "B"


def pair_prompts(pairs: int) -> list[world.Prompt]:
    """The prompt of each pair: a fixed shuffle of all 144 prompts, cycled."""
    order = world.all_prompts()
    np.random.default_rng(1234).shuffle(order)
    return [order[i % len(order)] for i in range(pairs)]


def make_pairs(
    out_dir: str | Path,
    pairs: int = 640,
    model: str | Path | None = None,
    steps: int | None = None,
    batch: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Sample, score, label and write ``pairs`` pairs; returns a summary (also ``make_pairs.json``)."""
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.sampler import SampleSpec, sample
    from guidance.train.preference_data import write_pairs

    if pairs < 1:
        raise ValueError(f"--pairs must be >= 1; got {pairs}")
    if batch < 2 or batch % 2:
        raise ValueError(f"batch must be an even number >= 2; got {batch}")
    steps = steps or DEFAULT_STEPS
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    shape = DEFAULT_SHAPE
    prompts = pair_prompts(pairs)
    specs = []
    for i, prompt in enumerate(prompts):
        specs += [SampleSpec(prompt.text, seed=PAIR_SEED_BASE + 2 * i),
                  SampleSpec(prompt.text, seed=PAIR_SEED_BASE + 2 * i + 1)]
    latents, scores = [], []
    start = time.perf_counter()
    for first in tqdm(range(0, len(specs), batch), desc="sample", unit="batch", disable=not progress):
        chunk = specs[first:first + batch]
        result = sample(family, chunk, shape, steps)
        latents.extend(result.latents.cpu())
        scores.extend(evaluate(frames, spec.prompt) for frames, spec in zip(result.frames, chunk))
    seconds = time.perf_counter() - start

    records, counts = [], {o: Counter() for o in OBJECTIVES}
    for i, prompt in enumerate(prompts):
        sa, sb = scores[2 * i], scores[2 * i + 1]
        labels = {o: label(sa[o], sb[o], TIE_MARGIN[o]) for o in OBJECTIVES}
        split = "test" if prompt.held_out else "train"
        for o in OBJECTIVES:
            counts[o][f"{split}:{labels[o]}"] += 1
        records.append({"prompt": prompt.text, "a": latents[2 * i], "b": latents[2 * i + 1], "labels": labels,
                        "split": split, "shape": shape, "scores": (sa, sb)})
    out = Path(out_dir)
    write_pairs(out, OBJECTIVES, ({k: v for k, v in r.items() if k != "scores"} for r in records), kind="latents",
                description=f"demo world: {pairs} pairs of the demo model ({steps} steps, default CFG), labelled "
                            "by the ground-truth metrics of guidance.demo.metrics",
                tie_margin=dict(TIE_MARGIN))
    all_scores = {o: float(np.mean([s[o] for s in scores])) for o in OBJECTIVES}
    summary = {
        "pairs": pairs, "steps": steps, "sample_seconds": round(seconds, 1),
        "splits": dict(Counter(r["split"] for r in records)),
        "labels": {o: dict(sorted(c.items())) for o, c in counts.items()},
        "mean_scores": all_scores, "tie_margin": TIE_MARGIN,
        "scores": [{"prompt": r["prompt"], "split": r["split"], "a": r["scores"][0], "b": r["scores"][1]}
                   for r in records],
    }
    (out / "make_pairs.json").write_text(json.dumps(summary, indent=1))
    scored_clips_from_pairs(out)
    return summary


def scored_clips_from_pairs(data_dir: str | Path) -> Path:
    """Write ``clips.jsonl`` for a ``make-pairs`` directory: both samples of every pair with their
    ground-truth scores from ``make_pairs.json`` as rewards, in the pair's split and shape."""
    from guidance.align.scored_clips import write_scored_clips

    out = Path(data_dir)
    scores = json.loads((out / "make_pairs.json").read_text())["scores"]
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) != len(scores):
        raise ValueError(f"{out}: pairs.jsonl has {len(rows)} pairs but make_pairs.json scores {len(scores)}")
    records = ({"prompt": row["prompt"], "clip": row[side], "rewards": score[side], "split": row.get("split"),
                "shape": row.get("shape")} for row, score in zip(rows, scores) for side in ("a", "b"))
    return write_scored_clips(out, OBJECTIVES, records)
