"""The method registry: every method is registered, its option groups' flags are in ``nrg align``
under a section naming it, its task builds on the tiny Wan pipeline, and a config is made from (and
gives back) the settings' flat names."""

import argparse
from dataclasses import fields

import pytest
import torch

from guidance.align import config as align_config
from guidance.align import trainer
from guidance.align.config import AlignConfig
from guidance.align.methods.base import flag
from guidance.align.methods.registry import METHODS, OPTION_GROUPS, REGISTRY, methods_taking
from guidance.align.methods.sudo import SudoOptions
from guidance.align.scored_clips import load_scored_clips, write_scored_clips
from guidance.align.task import Task
from guidance.families import load_pipeline
from guidance.reward_model import init_reward_model
from guidance.train.reward import PromptCache
from server.cli import build_parser
from tests.guidance.align.test_trainer import FAST, PROMPT, SHAPE, _latent_shape, _pairs

EXPECTED = ("flow-dpo", "flow-rwr", "diffusion-dro", "sudo", "abc", "spo", "gradspo", "spro", "hybrid")


def test_every_method_is_registered_in_the_documented_order():
    assert METHODS == EXPECTED == tuple(method.name for method in REGISTRY.values())
    assert align_config.METHODS is METHODS


def test_option_names_are_flat_unique_and_apart_from_the_shared_settings():
    names = [f.name for kind in OPTION_GROUPS for f in fields(kind)]
    shared = {f.name for f in fields(AlignConfig)}
    assert len(names) == len(set(names)) and not set(names) & shared
    assert all(methods_taking(kind) for kind in OPTION_GROUPS)
    assert all(kind.switch in {f.name for f in fields(kind)} for kind in OPTION_GROUPS if kind.switch is not None)


def _align_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["align"]


@pytest.mark.parametrize("name", EXPECTED)
def test_every_option_of_a_method_has_its_flag_in_a_section_naming_the_method(name):
    parser = _align_parser()
    sections = {group.title: {a.dest: a for a in group._group_actions} for group in parser._action_groups}
    for kind in REGISTRY[name].options:
        title, actions = next((t, a) for t, a in sections.items() if t.startswith(kind.title + " (--method"))
        assert name in title.split("(--method ")[1].rstrip(")").split(" / ")
        for f in fields(kind):
            action = actions[f.name]
            assert action.option_strings == [flag(f.name)] and action.default == f.default


def test_a_config_is_made_from_flat_names_and_gives_them_back():
    config = AlignConfig(method="sudo", lr=1e-4, sudo_sft=0.3, targets=("to_q",))
    assert config.option(SudoOptions) == SudoOptions(sudo_sft=0.3) and config.lr == 1e-4
    settings = config.settings()
    assert settings["sudo_sft"] == 0.3 and settings["targets"] == ["to_q"] and settings["dro_lag"] == 10
    assert AlignConfig(**settings).settings() == settings
    with pytest.raises(TypeError, match="unknown settings: sudo_sf"):
        AlignConfig(sudo_sf=0.3)


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """The tiny Wan pipeline (no adapter: building a task attaches none), preference pairs, scored
    clips of the same latent shape, and a latent reward model of their objective."""
    root = tmp_path_factory.mktemp("registry")
    family = load_pipeline(tiny_dir("wan"))
    pairs = _pairs(root / "pairs", family)
    generator = torch.Generator().manual_seed(2)
    records = [{"prompt": PROMPT, "clip": torch.randn(_latent_shape(family), generator=generator),
                "rewards": {"x": float(i % 2)}, "split": "test" if i < 4 else "train", "shape": SHAPE}
               for i in range(8)]
    write_scored_clips(root / "clips", ["x"], records)
    clips = load_scored_clips(root / "clips", family, ["x"])
    reward = str(init_reward_model(family, ["x"], num_blocks=1, seed=0).save(root / "reward"))
    return family, {"pairs": pairs, "clips": clips}, reward


def _build(setup, name, data_kind):
    family, data, reward = setup
    config = AlignConfig(**FAST, method=name, steps=2, online_steps=2,
                         reward_model=reward if name in ("spo", "gradspo", "spro") else None)
    config.validate()
    return trainer.make_task(family, data[data_kind], config, {"x": 1.0}, PromptCache(family))


@pytest.mark.parametrize("name, data_kind", [(name, kind) for name, method in REGISTRY.items()
                                             for kind in (("pairs", "clips") if method.data == "either" else
                                                          (method.data,))])
def test_every_method_builds_its_task_on_the_tiny_pipeline(setup, name, data_kind):
    task, held_out, info = _build(setup, name, data_kind)
    assert isinstance(task, Task) and task.keys and len(held_out) > 0 and info


@pytest.mark.parametrize("name", [name for name, method in REGISTRY.items() if method.data != "either"])
def test_a_method_refuses_the_other_kind_of_data(setup, name):
    other, wanted = ("clips", "preference pairs") if REGISTRY[name].data == "pairs" else ("pairs", "scored clips")
    with pytest.raises(ValueError, match=f"--method {name} trains on {wanted}"):
        _build(setup, name, other)
