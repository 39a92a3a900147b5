"""Simulated annotator groups for Diff-UAPA (``nrg demo annotate``).

Real preference data comes from several groups of people who disagree. The demo world's labels
come from exact metrics, so to measure what Diff-UAPA's per-clip Beta prior buys we re-label a
``make-pairs`` data set as three groups would, every pair once per group (``"group"`` on each line
of ``pairs.jsonl``, the format of docs/align.md):

* ``accurate``: the ground-truth labels, as ``make-pairs`` wrote them;
* ``noisy``: the same, with each decisive label flipped with probability ``NOISY_FLIP`` (0.35);
* ``biased``: prefers motion over alignment: where the two clips' motion differs decisively, its TA
  vote goes to the clip that moves better, whatever the text says; its VQ and MQ votes are accurate.

The pooled data set is what Flow-DPO would see without knowing who voted; Diff-UAPA sees the same
lines and weighs each clip by all groups' votes on it. The latent files are copied, not re-sampled.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

from demo_world.metrics import OBJECTIVES
from demo_world.pairs import TIE_MARGIN, label

GROUPS = ("accurate", "noisy", "biased")
NOISY_FLIP = 0.35
_FLIPPED = {"A": "B", "B": "A", "tie": "tie"}


def group_labels(scores_a: dict, scores_b: dict, rng: random.Random) -> dict[str, dict[str, str]]:
    """{group: {objective: "A" | "B" | "tie"}} for one pair from its clips' ground-truth scores."""
    truth = {o: label(scores_a[o], scores_b[o], TIE_MARGIN[o]) for o in OBJECTIVES}
    noisy = {o: _FLIPPED[v] if v != "tie" and rng.random() < NOISY_FLIP else v for o, v in truth.items()}
    biased = dict(truth)
    if truth["mq"] != "tie":
        biased["ta"] = truth["mq"]
    return {"accurate": truth, "noisy": noisy, "biased": biased}


def annotate(data_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Write ``out_dir``: ``data_dir``'s pairs (a ``make-pairs`` set) voted on by the three groups.

    Prompt-contrastive pairs are left out (their B side is the same clip under another prompt, which
    no annotator would be shown). Test pairs keep only the accurate group's labels, so held-out
    accuracy is measured against the truth. Returns a summary (also ``annotators.json``)."""
    src, out = Path(data_dir), Path(out_dir)
    summary_file = src / "make_pairs.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{src} is not a `nrg demo make-pairs` data set (no make_pairs.json with the scores)")
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --data: the annotated set is written beside the original")
    scores = json.loads(summary_file.read_text())["scores"]
    rows = [json.loads(line) for line in (src / "pairs.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) != len(scores):
        raise ValueError(f"{src}: pairs.jsonl has {len(rows)} pairs but make_pairs.json scores {len(scores)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json",):
        shutil.copy2(src / name, out / name)
    shutil.copytree(src / "latents", out / "latents", dirs_exist_ok=True)
    rng = random.Random(seed)
    lines, agreement = [], Counter()
    for row, score in zip(rows, scores):
        if "prompt_b" in row:
            continue
        votes = group_labels(score["a"], score["b"], rng)
        groups = GROUPS if row.get("split") == "train" else ("accurate",)
        for group in groups:
            lines.append(json.dumps({**row, "labels": votes[group], "group": group}))
            for o in OBJECTIVES:
                agreement[f"{group}:{o}:{'same' if votes[group][o] == votes['accurate'][o] else 'differs'}"] += 1
    (out / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"source": str(src), "groups": list(GROUPS), "noisy_flip": NOISY_FLIP, "seed": seed,
               "lines": len(lines), "agreement_with_accurate": dict(sorted(agreement.items()))}
    (out / "annotators.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
