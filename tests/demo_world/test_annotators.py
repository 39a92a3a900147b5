"""The simulated annotator groups of ``nrg demo annotate`` (Diff-UAPA's demo data)."""

import json
import random

import pytest

from demo_world import annotators
from demo_world.pairs import TIE_MARGIN


def _scores(vq, mq, ta):
    return {"vq": vq, "mq": mq, "ta": ta}


def test_accurate_is_the_truth_biased_lets_motion_decide_alignment():
    votes = annotators.group_labels(_scores(0.5, 0.3, 0.0), _scores(0.4, 0.1, 1.0), random.Random(0))
    assert votes["accurate"] == {"vq": "A", "mq": "A", "ta": "B"}
    assert votes["biased"] == {"vq": "A", "mq": "A", "ta": "A"}
    tie_mq = annotators.group_labels(_scores(0.5, 0.1, 0.0), _scores(0.4, 0.1, 1.0), random.Random(0))
    assert tie_mq["biased"]["ta"] == "B"


def test_noisy_flips_decisive_labels_at_its_rate_and_never_ties():
    rng = random.Random(1)
    a, b = _scores(0.9, 0.9, 1.0), _scores(0.1, 0.9 - TIE_MARGIN["mq"] / 2, 0.0)
    flips = ties_kept = 0
    for _ in range(2000):
        votes = annotators.group_labels(a, b, rng)
        flips += votes["noisy"]["vq"] == "B"
        ties_kept += votes["noisy"]["mq"] == votes["accurate"]["mq"]
    assert ties_kept == 2000 and votes["accurate"]["mq"] == "tie"
    assert abs(flips / 2000 - annotators.NOISY_FLIP) < 0.04


def test_annotate_writes_every_train_pair_once_per_group_and_test_pairs_truthfully(tmp_path):
    src = tmp_path / "pairs"
    (src / "latents").mkdir(parents=True)
    (src / "dataset.json").write_text(json.dumps({"objectives": ["vq", "mq", "ta"]}))
    rows, scores = [], []
    for i, split in enumerate(["train", "train", "test"]):
        rows.append({"prompt": "a red square moving up", "a": f"latents/{i:06d}_a.safetensors",
                     "b": f"latents/{i:06d}_b.safetensors", "labels": {}, "split": split})
        scores.append({"a": _scores(0.5, 0.3, 0.0), "b": _scores(0.4, 0.1, 1.0)})
    rows.append({**rows[0], "prompt_b": "a blue square moving up"})
    scores.append(scores[0])
    (src / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "make_pairs.json").write_text(json.dumps({"scores": scores}))
    summary = annotators.annotate(src, tmp_path / "voted")
    lines = [json.loads(x) for x in (tmp_path / "voted" / "pairs.jsonl").read_text().splitlines()]
    assert summary["lines"] == len(lines) == 2 * 3 + 1
    assert [x["group"] for x in lines if x["split"] == "test"] == ["accurate"]
    assert not any("prompt_b" in x for x in lines)
    with pytest.raises(ValueError, match="--out must differ"):
        annotators.annotate(src, src)
