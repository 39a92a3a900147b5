"""Preference pairs labelled by the demo world's ground truth (``nrg demo make-pairs``).

Each pair is two samples of the demo model for one prompt with two seeds. Each objective is labelled
from the ground-truth metrics of the decoded clips (``demo_world.metrics``): "A" or "B" for the
clip with the higher score, "tie" when the scores differ by less than ``TIE_MARGIN`` (TA moves in
steps of 1/3, so its margin makes it a tie exactly when both clips get the same TA). The data set
(format: docs/reward_training.md) holds the final latents of the samples (what the sampler works in),
so ``nrg train-reward`` needs no VAE pass. The same directory is also a scored-clips data set
(``clips.jsonl``: every sample with its three ground-truth scores, for ``nrg align --method flow-rwr``).

Prompts: draw i takes prompt i of a fixed cycle through every prompt of the grammar and samples it
with ``pool`` seeds, ``PAIR_SEED_BASE + pool i + j``, below the evaluation seeds; every two samples of
a draw make a pair (``pool`` = 2: one pair per draw, the original data set; larger pools give all
within-prompt pairs, K (K - 1) / 2 per draw, so each sample is compared with several others). Draws
of the world's held-out combinations go to the ``test`` split, all others to ``train`` (so held-out
accuracy is measured on exactly the prompts ``nrg eval`` guides on, with other seeds).

Prompt-contrastive pairs (``contrastive``): every sample also makes one pair with itself, scored once
under its own prompt (A) and once under the prompt with one word changed (B, ``prompt_b``; the word
cycles through colour, shape and direction). Its TA label is the ground truth's TA of the clip under
each prompt; its VQ and MQ labels are ties, because the picture is the same. Without such pairs the
prompt is common to both clips of every pair and cancels in r_A - r_B, so a reward model never has to
read the text to rank them; these pairs make text alignment depend on the text, and teach the other
objectives not to.

Sampler states (``states``): every sample's latents file also records the states the sampler passed
through at the noise levels of the default guidance window (``guidance.nrg.DEFAULT_WINDOW``), the
very x_t the reward model is queried on when it guides (``nrg train-reward --trajectory-share``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from demo_world import world
from demo_world.metrics import METRICS_VERSION, OBJECTIVES, evaluate

#: |score_A - score_B| below this is a tie.
TIE_MARGIN = {"vq": 0.05, "mq": 0.05, "ta": 0.1}
PAIR_SEED_BASE = 500_000


def label(a: float, b: float, margin: float) -> str:
    if abs(a - b) < margin:
        return "tie"
    return "A" if a > b else "B"


def pair_prompts(pairs: int) -> list[world.Prompt]:
    """The prompt of each draw: a fixed shuffle of all 144 prompts, cycled."""
    order = world.all_prompts()
    np.random.default_rng(1234).shuffle(order)
    return [order[i % len(order)] for i in range(pairs)]


def changed_prompt(prompt: world.Prompt, index: int) -> world.Prompt:
    """``prompt`` with one word changed: the colour, shape or direction (by ``index`` mod 3), replaced
    by the next value of the world's list."""
    field, values = [("color", list(world.COLORS)), ("shape", list(world.SHAPES)),
                     ("direction", list(world.DIRECTIONS))][index % 3]
    current = getattr(prompt, field)
    return replace(prompt, **{field: values[(values.index(current) + 1) % len(values)]})


def make_pairs(
    out_dir: str | Path,
    pairs: int = 640,
    model: str | Path | None = None,
    steps: int | None = None,
    batch: int = 32,
    device: str = "cpu",
    progress: bool = True,
    pool: int = 2,
    contrastive: bool = False,
    states: bool = False,
) -> dict:
    """Sample ``pairs`` prompt draws of ``pool`` samples each, score, label and write every
    within-draw pair (and, with ``contrastive``, one prompt-contrastive pair per sample; with
    ``states``, each sample's sampler states in the default guidance window); returns a summary
    (also ``make_pairs.json``)."""
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.nrg import DEFAULT_WINDOW
    from guidance.sampler import SampleSpec, sample, sample_with_states
    from guidance.train.preference_data import write_pairs

    if pairs < 1:
        raise ValueError(f"--pairs must be >= 1; got {pairs}")
    if batch < 2 or batch % 2:
        raise ValueError(f"batch must be an even number >= 2; got {batch}")
    if not 2 <= pool <= 16:
        raise ValueError(f"--pool must be between 2 and 16 samples per prompt; got {pool}")
    steps = steps or DEFAULT_STEPS
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    shape = DEFAULT_SHAPE
    prompts = pair_prompts(pairs)
    specs = [SampleSpec(prompt.text, seed=PAIR_SEED_BASE + pool * i + j)
             for i, prompt in enumerate(prompts) for j in range(pool)]
    latents, scores, contrasts, trajectories, levels = [], [], [], [], None
    start = time.perf_counter()
    for first in tqdm(range(0, len(specs), batch), desc="sample", unit="batch", disable=not progress):
        chunk = specs[first:first + batch]
        if states:
            result, chunk_states, levels = sample_with_states(family, chunk, shape, steps, DEFAULT_WINDOW)
            trajectories.extend(chunk_states)
        else:
            result = sample(family, chunk, shape, steps)
        latents.extend(result.latents.cpu())
        for n, (frames, spec) in enumerate(zip(result.frames, chunk)):
            scores.append(evaluate(frames, spec.prompt))
            if contrastive:
                other = changed_prompt(world.parse_prompt(spec.prompt), first + n)
                contrasts.append((other.text, evaluate(frames, other)["ta"]))
    seconds = time.perf_counter() - start

    records, counts = [], {o: Counter() for o in OBJECTIVES}

    def trajectory(a: int, b: int) -> dict:
        if not states:
            return {}
        return {"trajectory_a": trajectories[a], "trajectory_b": trajectories[b], "trajectory_t": levels}
    for i, prompt in enumerate(prompts):
        split = "test" if prompt.held_out else "train"
        for ja, jb in combinations(range(pool), 2):
            sa, sb = scores[pool * i + ja], scores[pool * i + jb]
            labels = {o: label(sa[o], sb[o], TIE_MARGIN[o]) for o in OBJECTIVES}
            for o in OBJECTIVES:
                counts[o][f"{split}:{labels[o]}"] += 1
            records.append({"prompt": prompt.text, "a": latents[pool * i + ja], "b": latents[pool * i + jb],
                            "labels": labels, "split": split, "shape": shape, "scores": (sa, sb),
                            **trajectory(pool * i + ja, pool * i + jb)})
        for j in range(pool if contrastive else 0):
            own, (other, other_ta) = scores[pool * i + j], contrasts[pool * i + j]
            labels = {"vq": "tie", "mq": "tie", "ta": label(own["ta"], other_ta, TIE_MARGIN["ta"])}
            counts["ta"][f"{split}:contrastive:{labels['ta']}"] += 1
            records.append({"prompt": prompt.text, "prompt_b": other, "a": latents[pool * i + j],
                            "b": latents[pool * i + j], "labels": labels, "split": split, "shape": shape,
                            "scores": (own, {**own, "ta": other_ta}), **trajectory(pool * i + j, pool * i + j)})
    out = Path(out_dir)
    kinds = f"{pool} samples per prompt, every within-prompt pair" + (", prompt-contrastive pairs" if contrastive else "") \
        + (f", sampler states at {len(levels)} noise levels" if states else "")
    write_pairs(out, OBJECTIVES, ({k: v for k, v in r.items() if k != "scores"} for r in records), kind="latents",
                description=f"demo world: {len(records)} pairs from {pairs} prompt draws of the demo model "
                            f"({kinds}; {steps} steps, default CFG), labelled by the ground-truth metrics of "
                            "demo_world.metrics",
                tie_margin=dict(TIE_MARGIN))
    all_scores = {o: float(np.mean([s[o] for s in scores])) for o in OBJECTIVES}
    summary = {
        "pairs": len(records), "draws": pairs, "pool": pool, "contrastive": contrastive, "steps": steps,
        "state_levels": levels,
        "sample_seconds": round(seconds, 1),
        "splits": dict(Counter(r["split"] for r in records)),
        "labels": {o: dict(sorted(c.items())) for o, c in counts.items()},
        "mean_scores": all_scores, "tie_margin": TIE_MARGIN, "metrics_version": METRICS_VERSION,
        "scores": [{"prompt": r["prompt"], **({"prompt_b": r["prompt_b"]} if "prompt_b" in r else {}),
                    "split": r["split"], "a": r["scores"][0], "b": r["scores"][1]} for r in records],
    }
    (out / "make_pairs.json").write_text(json.dumps(summary, indent=1))
    scored_clips_from_pairs(out)
    return summary


def scored_clips_from_pairs(data_dir: str | Path) -> Path:
    """Write ``clips.jsonl`` for a ``make-pairs`` directory: both samples of every pair with their
    ground-truth scores from ``make_pairs.json`` as rewards, in the pair's split and shape.
    Prompt-contrastive pairs are left out (their B side is the A clip scored under another prompt);
    with ``pool`` > 2 a sample is listed once per pair it is in, i.e. ``pool - 1`` times, so every
    sample keeps the same weight."""
    from guidance.align.scored_clips import write_scored_clips

    out = Path(data_dir)
    scores = json.loads((out / "make_pairs.json").read_text())["scores"]
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) != len(scores):
        raise ValueError(f"{out}: pairs.jsonl has {len(rows)} pairs but make_pairs.json scores {len(scores)}")
    records = ({"prompt": row["prompt"], "clip": row[side], "rewards": score[side], "split": row.get("split"),
                "shape": row.get("shape")} for row, score in zip(rows, scores) if "prompt_b" not in row
               for side in ("a", "b"))
    return write_scored_clips(out, OBJECTIVES, records)
