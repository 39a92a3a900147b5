"""Objective weights, pair orientation and the scored-clips format with its field-naming errors."""

import json
import re

import pytest
import torch

from guidance.align.data import orient_pairs, parse_objective_weights
from guidance.align.scored_clips import CLIPS_FILE, load_scored_clips, read_clips, write_scored_clips
from guidance.train.preference_data import PreferenceData, PreferenceDataError


def test_parse_objective_weights():
    assert parse_objective_weights(None, ("vq", "mq")) == {"vq": 1.0, "mq": 1.0}
    assert parse_objective_weights("mq", ("vq", "mq")) == {"mq": 1.0}
    assert parse_objective_weights("vq=1, mq=0.5", ("vq", "mq")) == {"vq": 1.0, "mq": 0.5}
    for text, message in [
        ("xx=1", "unknown objective 'xx'; the data has vq, mq"),
        ("mq=abc", "weight of 'mq' must be a number"),
        ("mq=-1", "finite number >= 0"),
        ("mq=1,mq=2", "'mq' is given twice"),
        ("mq=0", "at least one objective a weight > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_objective_weights(text, ("vq", "mq"))


def _data(labels):
    n = len(labels)
    return PreferenceData(
        objectives=("vq", "mq"), prompts=["p"] * n, latents_a=[torch.zeros(1)] * n, latents_b=[torch.ones(1)] * n,
        shapes=[None] * n, labels=torch.tensor(labels), test=torch.zeros(n, dtype=torch.bool), lines=list(range(n)),
    )


def test_orient_pairs_combines_weighted_labels():
    # labels: 0 A wins, 1 B wins, 2 tie, -1 missing
    data = _data([[0, 0], [1, -1], [0, 1], [2, 2], [1, 0], [-1, 0]])
    pairs = orient_pairs(data, {"vq": 1.0, "mq": 0.5}, range(6))
    # pair 2: +1 - 0.5 > 0 (A); pair 3: ties, dropped; pair 4: -1 + 0.5 < 0 (B).
    assert pairs.index == [0, 1, 2, 4, 5]
    assert pairs.a_wins == [True, False, True, False, True]
    assert pairs.weight == pytest.approx([1.0, 1 / 1.5, 0.5 / 1.5, 0.5 / 1.5, 0.5 / 1.5])
    # Equal weights that disagree cancel: the pair is not trained on.
    assert orient_pairs(data, {"vq": 1.0, "mq": 1.0}, [2]).index == []


@pytest.fixture
def clip_dir(tmp_path):
    records = [{"prompt": "a red circle moving left", "clip": torch.full((16, 2, 2, 2), float(i)),
                "rewards": {"mq": 0.1 * i, "vq": None}, "split": "test" if i == 0 else "train",
                "shape": {"frames": 5, "height": 16, "width": 16}} for i in range(4)]
    write_scored_clips(tmp_path, ["vq", "mq"], records, description="test clips")
    return tmp_path


def test_scored_clips_round_trip(clip_dir):
    info, records = read_clips(clip_dir)
    assert info.objectives == ("vq", "mq")
    assert [r.rewards for r in records] == [{"mq": 0.1 * i} for i in range(4)]
    assert [r.split for r in records] == ["test", "train", "train", "train"]


def test_scored_clips_load_and_skip_unknown_rewards(clip_dir, tiny_family):
    family = tiny_family("wan")
    clips = load_scored_clips(clip_dir, family, ["mq"])
    assert len(clips) == 4 and clips.indices("test") == [0]
    assert clips.combined({"mq": 2.0}).tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert float(clips.latents[3].mean()) == 3.0
    with pytest.raises(PreferenceDataError, match="no clip has a reward on every one of vq"):
        load_scored_clips(clip_dir, family, ["vq"])


@pytest.mark.parametrize("row, message", [
    ({"clip": "latents/clip_000000.safetensors", "rewards": {}}, "clips.jsonl line 1: missing field 'prompt'"),
    ({"prompt": "p", "clip": "nope.npy", "rewards": {}}, "line 1: clip: file not found: nope.npy"),
    ({"prompt": "p", "clip": "x.pt", "rewards": {}}, "line 1: clip: unsupported file type '.pt'"),
    ({"prompt": "p", "clip": "latents/clip_000000.safetensors", "rewards": {"mq": "high"}},
     "line 1: rewards.mq must be a finite number"),
    ({"prompt": "p", "clip": "latents/clip_000000.safetensors", "rewards": {"mq": float("nan")}},
     "line 1: rewards.mq must be a finite number"),
    ({"prompt": "p", "clip": "latents/clip_000000.safetensors", "rewards": {"zz": 1}},
     "line 1: rewards: unknown objective 'zz'"),
    ({"prompt": "p", "clip": "latents/clip_000000.safetensors", "rewards": [1]}, "line 1: rewards must be an object"),
    ({"prompt": "p", "clip": "latents/clip_000000.safetensors", "rewards": {}, "split": "dev"},
     "line 1: split must be \"train\" or \"test\""),
    ({"prompt": " ", "clip": "latents/clip_000000.safetensors", "rewards": {}}, "line 1: prompt must be a non-empty"),
])
def test_scored_clips_errors_name_line_and_field(clip_dir, row, message):
    (clip_dir / CLIPS_FILE).write_text(json.dumps(row, allow_nan=True) + "\n")
    with pytest.raises(PreferenceDataError, match=re.escape(message)):
        read_clips(clip_dir)


def test_scored_clips_missing_file(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"objectives": ["mq"]}))
    with pytest.raises(FileNotFoundError, match="not a scored-clips data set"):
        read_clips(tmp_path)
