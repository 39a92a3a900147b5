"""``nrg eval --calibrate`` and ``nrg eval --tune`` with ``--prompts FILE``, end to end through the CLI on the
tiny Wan pipeline with an untrained reward of objectives of its own (``bright``, ``smooth``): the files they
write, that the server reads them, that the judge (not the reward) chooses the strength, and the errors."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import torch

from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import (
    init_reward_model,
    load_reward_model,
    read_reward_config,
)
from guidance.sample_types import SampleSpec
from guidance.sampler import sample
from guidance.tuning.clips import TUNE_SEED_BASE, items
from server.cli import main
from server.config import ServerConfig, load_models
from tests.server.conftest import running_server, wait_for

PROMPTS = ("a red kite over a beach", "a blue car at night")
SHAPE = VideoShape(height=32, width=32, frames=9)
STEPS = 3
SEEDS = 2
STRENGTHS = (1.0, 2.0, 4.0)
#: What every run shares: the tiny shape, few steps, 2 prompts x 2 seeds.
TINY = ["--size", "32x32", "--frames", "9", "--steps", str(STEPS), "--seeds", str(SEEDS), "--quiet"]

#: The preference of ``preferring_judge``: reference clips [M, F, H, W, 3], the strength of each (0 for an
#: unguided clip), and the strength it likes.
PREFERENCE: dict = {}


class _PreferringJudge:
    """Likes the clips of one guidance strength and nothing else: a clip scores 1 when its nearest reference
    clip was guided at the preferred strength, else 0. So the strength ``--tune`` chooses is known."""

    objectives = ("liked",)
    differentiable = frozenset()

    def score(self, frames: torch.Tensor, prompts, fps: float = 16.0) -> torch.Tensor:
        references = PREFERENCE["references"]
        distance = (frames[:, None] - references[None]).abs().flatten(2).mean(-1)
        nearest = [PREFERENCE["strengths"][i] for i in distance.argmin(1).tolist()]
        return torch.tensor([[float(s == PREFERENCE["preferred"])] for s in nearest])


def preferring_judge(device: str) -> _PreferringJudge:
    return _PreferringJudge()


@pytest.fixture(scope="module")
def own(tiny_dir, tiny_family, tmp_path_factory):
    """The tiny Wan directory, a prompt file and a saved untrained reward of objectives bright and smooth."""
    root = tmp_path_factory.mktemp("own")
    (root / "prompts.txt").write_text("# two prompts\n" + "\n".join(PROMPTS) + "\n")
    init_reward_model(tiny_family("wan"), ["bright", "smooth"], num_blocks=1, seed=0).save(root / "reward")
    return {"model": tiny_dir("wan"), "prompts": root / "prompts.txt", "reward": root / "reward"}


def _reward_copy(own, tmp_path):
    shutil.copytree(own["reward"], tmp_path / "reward")
    return tmp_path / "reward"


def _args(own, reward, *more: str) -> list[str]:
    return ["eval", "--model", str(own["model"]), "--reward", str(reward), "--prompts", str(own["prompts"]), *TINY,
            *more]


def test_calibrate_writes_the_rewards_statistics_where_the_server_reads_them(own, tiny_family, tmp_path, capsys):
    reward = _reward_copy(own, tmp_path)
    before = read_reward_config(reward)["guidance_defaults"]
    assert main(_args(own, reward, "--calibrate", "--write-defaults", "--output", str(tmp_path / "cal.json"))) == 0
    assert "wrote calibration to" in capsys.readouterr().out
    config = read_reward_config(reward)
    calibration = config["calibration"]
    assert calibration["samples"] == len(PROMPTS) * SEEDS and set(calibration["mean"]) == {"bright", "smooth"}
    assert config["guidance_defaults"] == before  # calibrating chooses nothing
    assert json.loads((tmp_path / "cal.json").read_text())["calibration"] == calibration

    # The statistics are the reward's t = 0 scores of the unguided clips of the calibration seeds.
    family = tiny_family("wan")
    specs = [SampleSpec(p, seed=s) for p, s in items(PROMPTS, TUNE_SEED_BASE, SEEDS)]
    scores = sample(family, specs, SHAPE, STEPS, load_reward_model(reward, family)).rewards
    assert [calibration["mean"][o] for o in ("bright", "smooth")] == pytest.approx(scores.mean(0).tolist(), abs=1e-5)
    assert [calibration["std"][o] for o in ("bright", "smooth")] == pytest.approx(scores.std(0).tolist(), abs=1e-5)

    # The server loads it, and a served job reports its rewards as z-scores against it.
    hosted = load_models(ServerConfig(models={"mine": own["model"]}, rewards={"mine": reward}))
    assert hosted["mine"].reward.calibration.to_json() == calibration
    with running_server(tmp_path, hosted) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/v1/videos", json={"prompt": PROMPTS[0], "seed": 3, "size": "32x32", "num_frames": 9,
                                              "num_inference_steps": STEPS,
                                              "reward_guidance": {"weights": {"bright": 1}}}).json()
        done = wait_for(client, job["id"])
    assert done["status"] == "completed", done
    mean, std = calibration["mean"], calibration["std"]
    assert done["rewards_z"] == {o: pytest.approx((r - mean[o]) / std[o], abs=1e-3) for o, r in done["rewards"].items()}


@pytest.fixture(scope="module")
def references(own, tiny_family):
    """Every clip ``--tune`` samples on the tuning seeds (window 0,1, mode relative): unguided, and each
    objective guided alone at each strength, sampled as it samples them (one batch of the tuning items)."""
    family = tiny_family("wan")
    reward = load_reward_model(own["reward"], family)
    run_items = items(PROMPTS, TUNE_SEED_BASE, SEEDS)
    clips, strengths = [], []
    for objective, strength in [(None, 0.0)] + [(o, w) for o in ("bright", "smooth") for w in STRENGTHS]:
        guidance = None if objective is None else GuidanceSpec({objective: 1.0}, strength, (0.0, 1.0), "relative")
        frames = sample(family, [SampleSpec(p, seed=s, guidance=guidance) for p, s in run_items], SHAPE, STEPS,
                        reward).frames
        clips.append(frames)
        strengths += [strength] * len(frames)
    return torch.cat(clips), strengths


@pytest.mark.parametrize("preferred", [2.0, 0.0], ids=["likes-strength-2", "likes-unguided"])
def test_tune_chooses_the_strength_its_judge_prefers_and_writes_it_for_the_server(
        own, references, preferred, tiny_family, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(PREFERENCE, "references", references[0])
    monkeypatch.setitem(PREFERENCE, "strengths", references[1])
    monkeypatch.setitem(PREFERENCE, "preferred", preferred)
    reward = _reward_copy(own, tmp_path)
    before = read_reward_config(reward)["guidance_defaults"]
    out = tmp_path / "tune.json"
    assert main(_args(own, reward, "--tune", "--write-defaults", "--strengths", ",".join(f"{w:g}" for w in STRENGTHS),
                      "--window", "0,1", "--judge", f"liking={__name__}:preferring_judge",
                      "--objective-map", "bright=liked,smooth=liked", "--report-seeds", "1",
                      "--output", str(out))) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["judge"] == "liking" and report["objective_map"] == {"bright": "liked", "smooth": "liked"}
    assert report["tuning"]["seeds"] == [TUNE_SEED_BASE, TUNE_SEED_BASE + 1]
    assert not set(report["report"]["seeds"]) & set(report["tuning"]["seeds"])  # reported on other seeds
    clips = len(PROMPTS) * SEEDS
    net = {row["strength"]: row["net_share"] for row in report["tuning"]["scores"]}
    config = read_reward_config(reward)
    assert config["calibration"]["samples"] == clips  # --tune calibrates on its unguided clips too
    if preferred:
        assert net == {w: 1.0 if w == preferred else 0.0 for w in STRENGTHS}  # every pair won, or tied
        assert report["chosen_strength"] == preferred and report["report"]["strength"] == preferred
        defaults = config["guidance_defaults"]
        assert defaults["strength"] == preferred and defaults["window"] == [0.0, 1.0] and defaults["mode"] == "relative"
        assert "judged by liking=" in defaults["source"]
        assert f"chosen strength: {preferred:g}" in printed and "wrote guidance_defaults to" in printed
        assert load_reward_model(reward, tiny_family("wan")).guidance_defaults.strength == preferred
    else:
        assert all(v == -1.0 for v in net.values())  # every guided clip lost to its unguided twin
        assert report["chosen_strength"] is None and config["guidance_defaults"] == before
        assert "no strength raised the judge's verdict" in printed and "wrote guidance_defaults" not in printed


def test_tune_names_the_objective_map_a_reward_objective_lacks(own, capsys):
    with pytest.raises(SystemExit) as refused:
        main(_args(own, own["reward"], "--tune", "--strengths", "1", "--judge", "q=classic:exposure",
                   "--objective-map", "bright=exposure"))
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "['smooth']" in err and "--objective-map smooth=exposure" in err


@pytest.mark.parametrize("argv, message", [
    (["--tune", "--strengths", "1"], "--tune with --prompts FILE needs --judge NAME=SPEC"),
    (["--tune", "--judge", "classic"], "--tune needs --strengths"),
    (["--calibrate", "--judge", "classic"], "--judge: for --tune"),
    (["--tune", "--calibrate"], "one of them"),
    (["--calibrate", "--figures", "x"], "--figures: the demo world's table only"),
    (["--tune", "--strengths", "1", "--judge", "classic", "--objective-map", "bright"], "REWARD_OBJECTIVE=JUDGE_OBJ"),
    (["--tune", "--strengths", "1", "--judge", "classic", "--objective-map", "dim=exposure"], "does not have"),
])
def test_own_model_flags_are_refused_with_the_flag_named(own, argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        main(_args(own, own["reward"], *argv))
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_own_model_flags_need_a_prompt_file_and_a_reward(own, capsys):
    for argv, message in (
            (["eval", "--tune", "--strengths", "1", "--judge", "classic"], "--judge: for your own prompts"),
            (["eval", "--calibrate", "--prompts", str(own["prompts"])], "--reward RM_DIR is required")):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2 and message in capsys.readouterr().err
