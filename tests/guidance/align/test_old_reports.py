"""Runs saved before the method registry still resume, and their reports still read: the settings
are stored flat, under the names they always had, however the options are grouped in code."""

import json

import pytest

from guidance.align import trainer
from guidance.align.config import AlignConfig
from guidance.align.lora import STATE_DIR
from tests.guidance.align.test_trainer import FAST, _pairs

SETTINGS = dict(**FAST, method="sudo", steps=6, sudo_sft=0.25)
#: ``config`` of ``align_state/state.json`` (and ``args`` of ``align_report.json``, less the run's
#: totals) as the code before the registry wrote it for SETTINGS: ``asdict`` of the flat 60-field
#: AlignConfig, in its field order.
OLD_CONFIG = {
    "method": "sudo", "objectives": None, "lora_rank": 4, "lora_alpha": 8, "targets": ["to_q", "to_k", "to_v", "to_out.0"],
    "beta": 2000.0, "beta_schedule": "constant", "tau": 1.0, "lr": 0.001, "weight_decay": 0.0, "grad_clip": 1.0,
    "steps": 6, "epochs": None, "batch": 4, "t_min": 0.0, "t_max": 1.0, "seed": 0, "eval_every": None,
    "save_every": None, "cpu_budget_s": None, "snapshot_every": None, "is_clip": None, "is_kappa": None,
    "teacher": None, "tvkd_alpha": 1.0, "tvkd_gamma": 0.9, "uapa_map_ratio": None, "online_steps": 20,
    "online_cfg": None, "reward_model": None, "dro_margin": 0.001, "dro_lag": 10,
    "sudo_transforms": "permute,reverse,shuffle,blur,noise", "sudo_sft": 0.25, "sudo_blur": 1, "sudo_noise": 0.5,
    "spo_children": 4, "spo_beta": 10.0, "spo_clip": 0.1, "spo_threshold": 0.0, "spo_noise": 0.7, "gradspo_g": 0.5,
    "gradspo_ema": 0.9, "rounds": 2, "spro_samples": 4, "judge": "reward", "hybrid_offline": 4, "hybrid_online": 1,
    "online_prompts": None,
}


def test_the_settings_are_the_old_flat_names_and_values():
    assert AlignConfig(**SETTINGS).settings() == OLD_CONFIG
    assert AlignConfig(**OLD_CONFIG).settings() == OLD_CONFIG  # an old report's args make the same config


def _saved_by_the_old_code(out, config=OLD_CONFIG):
    state = out / STATE_DIR / "state.json"
    progress = json.loads(state.read_text())
    state.write_text(json.dumps({**progress, "config": config}, indent=1) + "\n")


@pytest.fixture
def fresh(tiny_dir):
    from guidance.families import load_pipeline

    return lambda: load_pipeline(tiny_dir("wan"))


def test_a_run_saved_by_the_old_code_resumes_exactly(fresh, tmp_path):
    data = _pairs(tmp_path / "data", fresh(), count=8)
    whole = trainer.align(fresh(), data, AlignConfig(**SETTINGS), tmp_path / "whole", progress=False, log=None)
    trainer.align(fresh(), data, AlignConfig(**SETTINGS), tmp_path / "old", progress=False, log=None, stop_after=3)
    _saved_by_the_old_code(tmp_path / "old")
    resumed = trainer.align(fresh(), data, AlignConfig(**SETTINGS), tmp_path / "old", resume=True, progress=False,
                            log=None)
    assert resumed.step_losses == whole.step_losses and resumed.report["resumed_at"] == [3]
    assert resumed.report["args"] == whole.report["args"]


def test_an_old_run_with_another_method_option_is_refused_naming_it(fresh, tmp_path):
    data = _pairs(tmp_path / "data", fresh(), count=8)
    trainer.align(fresh(), data, AlignConfig(**SETTINGS), tmp_path / "old", progress=False, log=None, stop_after=1)
    _saved_by_the_old_code(tmp_path / "old", {**OLD_CONFIG, "sudo_sft": 0.5})
    with pytest.raises(ValueError, match=r"other settings: sudo_sft: 0.5 \(now 0.25\)"):
        trainer.align(fresh(), data, AlignConfig(**SETTINGS), tmp_path / "old", resume=True, progress=False, log=None)
