"""``guidance.judges.load_judge`` and ``parse_named_spec``: what an operator's spec loads, and its errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from guidance.judges import JudgeError, load_judge, parse_named_spec


def test_classic_whole_or_a_subset():
    assert "sharpness" in load_judge("classic").objectives
    assert load_judge("classic:exposure, sharpness").objectives == ("exposure", "sharpness")


class _Brightness:
    objectives = ("bright",)
    differentiable = frozenset({"bright"})

    def score(self, frames, prompts, fps=16.0):
        return frames.mean((1, 2, 3, 4))[:, None]


def test_an_operator_plugin_is_called_with_the_device(monkeypatch):
    seen = []
    module = types.ModuleType("nrg_test_plugin")
    module.factory = lambda device: seen.append(device) or _Brightness()
    module.not_a_judge = lambda device: object()
    monkeypatch.setitem(sys.modules, "nrg_test_plugin.judges", module)
    judge = load_judge("nrg_test_plugin.judges:factory", "cpu")
    assert seen == ["cpu"] and judge.score(torch.ones(1, 2, 4, 4, 3), ["x"]).tolist() == [[1.0]]
    with pytest.raises(JudgeError, match="must return a Judge"):
        load_judge("nrg_test_plugin.judges:not_a_judge")
    with pytest.raises(JudgeError, match="cannot import missing"):
        load_judge("nrg_test_plugin.judges:missing")


def test_bad_specs_name_the_fix(tmp_path):
    with pytest.raises(JudgeError, match="unknown judge 'beauty'"):
        load_judge("beauty")
    with pytest.raises(JudgeError, match="needs a local model directory"):
        load_judge("clip")
    with pytest.raises(JudgeError, match="is not a directory"):
        load_judge(f"videoreward:{tmp_path / 'absent'}")


def test_named_specs():
    assert parse_named_spec("quality=classic:sharpness") == ("quality", "classic:sharpness")
    assert parse_named_spec("classic") == ("classic", "classic")
    with pytest.raises(JudgeError, match="judge name 'my-judge'"):
        parse_named_spec("my-judge=classic")
    with pytest.raises(JudgeError, match="empty spec"):
        parse_named_spec("q=")
