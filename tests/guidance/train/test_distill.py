"""``nrg reward distill`` (``guidance.train.distill``): from a pipeline, prompts and a judge to a served,
calibrated, tuned latent reward with a held-out report; labels follow the judge; runs resume."""

from __future__ import annotations

import json

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.judges import load_judge
from guidance.reward_model import load_reward_model
from guidance.train import distill
from guidance.train.distill import DistillConfig, Distiller, label, read_prompt_file, read_prompts, split_prompts
from guidance.train.reward import TrainConfig
from tests.guidance.families.equivalence import test_image

PROMPTS = ("a red ball", "a blue cube spinning", "a green field", "a cat walking", "a car at night")
SHAPE = VideoShape(height=32, width=32, frames=5)


class _Brightness:
    """A judge whose verdict is known: the mean pixel value (used to check the labels)."""

    objectives = ("bright",)
    differentiable = frozenset({"bright"})

    def score(self, frames, prompts, fps=16.0):
        return frames.mean((1, 2, 3, 4))[:, None]


def _config(**overrides) -> DistillConfig:
    base = dict(prompts=PROMPTS, shape=SHAPE, steps=3, judge_name="bright", pool=3, batch=6,
                train=TrainConfig(epochs=1, num_blocks=1, trajectory_share=0.5), strengths=(4.0,),
                tune_prompts=1, tune_seeds=1, report_seeds=1)
    return DistillConfig(**{**base, **overrides})


def test_the_whole_flow_writes_a_calibrated_tuned_reward_and_a_judged_report(tiny_family, tmp_path):
    family = tiny_family("wan")
    report = Distiller(family, _Brightness(), _config(), tmp_path, progress=False, log=lambda _: None,
                       held_out={"q": load_judge("classic:exposure")}).run()
    train, test = split_prompts(PROMPTS, 0.2)
    # Pool: one file per prompt; pairs: every within-prompt pair (3 per prompt), split by prompt.
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == [f"{i:05d}.safetensors" for i in range(5)]
    rows = [json.loads(line) for line in (tmp_path / "data" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and {r["prompt"] for r in rows if r["split"] == "test"} == set(test)
    spread = torch.tensor([s for i in range(5) for s in load_file_scores(tmp_path, i)]).std()
    assert report["pairs"]["tie_margin"]["bright"] == pytest.approx(0.1 * float(spread), rel=1e-5)
    model = load_reward_model(tmp_path / "reward", family)
    assert model.objectives == ("bright",) and model.calibration is not None and model.calibration.samples == 15
    tuned = json.loads((tmp_path / "tune.json").read_text())
    assert tuned["prompts"] == train[:1] and [r["strength"] for r in tuned["rows"]] == [4.0]
    if tuned["strength"] is None:  # the judge saw no gain: the reward keeps the built-in default
        assert model.guidance_defaults.source == "built-in"
    else:
        assert model.guidance_defaults.strength == 4.0 and "tuned by bright" in model.guidance_defaults.source
    verdict = report["guided_vs_unguided"]["per_objective"]["bright"]
    assert verdict["judge"]["wins"] + verdict["judge"]["losses"] + verdict["judge"]["ties"] == len(test)
    assert set(report["training"]["accuracy"]["objectives"]) == {"bright"}
    assert report["reward_hacking"] in ([], ["bright"])
    held_out = report["guided_vs_unguided"]["held_out_judges"]["q"]["exposure"]["judge"]
    assert held_out["wins"] + held_out["losses"] + held_out["ties"] == len(test)
    printed = distill.format_report(report)
    assert "judged by bright (not optimised)" in printed and "held-out judge q (neither optimised nor distilled" in printed


def load_file_scores(root, index: int) -> list[float]:
    from safetensors.torch import load_file

    return load_file(str(root / "pool" / f"{index:05d}.safetensors"))["scores"][:, 0].tolist()


def test_labels_follow_the_judge_with_ties_inside_the_margin():
    assert label(0.5, 0.2, 0.1) == "A" and label(0.2, 0.5, 0.1) == "B" and label(0.5, 0.45, 0.1) == "tie"
    assert label(0.3, 0.3, 0.0) == "tie" and label(0.31, 0.3, 0.0) == "A"


def test_a_pair_of_the_pool_is_labelled_by_its_samples_judge_scores(tiny_family, tmp_path):
    cfg = _config(prompts=PROMPTS[:2], test_share=0.5, tie_share=0.0)
    distiller = Distiller(tiny_family("wan"), _Brightness(), cfg, tmp_path, progress=False, log=lambda _: None)
    distiller.sample_pool()
    distiller.write_pairs()
    rows = [json.loads(line) for line in (tmp_path / "data" / "pairs.jsonl").read_text().splitlines()]
    for i, prompt in enumerate(cfg.prompts):
        s = load_file_scores(tmp_path, i)
        expected = [label(s[a], s[b], 0.0) for a, b in ((0, 1), (0, 2), (1, 2))]
        assert [r["labels"]["bright"] for r in rows if r["prompt"] == prompt] == expected


def test_an_interrupted_run_resumes_without_resampling(tiny_family, tmp_path, monkeypatch):
    cfg = _config(prompts=PROMPTS[:2], test_share=0.5)
    family = tiny_family("wan")
    Distiller(family, _Brightness(), cfg, tmp_path, progress=False, log=lambda _: None).sample_pool()
    (tmp_path / "pool" / "00001.safetensors").unlink()  # as if stopped during the second prompt
    calls = []
    real = distill.sample_with_states
    monkeypatch.setattr(distill, "sample_with_states", lambda *a, **k: calls.append(a[1][0].prompt) or real(*a, **k))
    Distiller(family, _Brightness(), cfg, tmp_path, progress=False, log=lambda _: None).sample_pool()
    assert calls == [PROMPTS[1]]


def test_prompt_files_splits_and_bad_settings(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# mine\na\n\nb\na\n")
    assert read_prompts(path) == ("a", "b")
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(path)
    train, test = split_prompts([f"p{i}" for i in range(40)], 0.25)
    assert train and test and not set(train) & set(test)
    assert split_prompts([f"p{i}" for i in range(41)], 0.25)[1][:len(test)] == test  # adding a prompt moves none
    with pytest.raises(ValueError, match="pool must be between 2 and 16"):
        _config(pool=1).validate()
    with pytest.raises(ValueError, match="need at least 2 distinct prompts"):
        _config(prompts=("a",)).validate()
    with pytest.raises(ValueError, match=r"objectives \['beauty'\] are not the judge's"):
        distill.judge_columns(_Brightness(), ["beauty"])


def test_a_jsonl_prompts_file_gives_each_prompt_its_image(tmp_path):
    (tmp_path / "pics").mkdir()
    test_image(0, 16, 16).save(tmp_path / "pics" / "cat.png")
    cat = {"prompt": "a cat", "image": "pics/cat.png"}
    lines = [cat, {"prompt": "a dog"}, cat]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    read = read_prompt_file(path)
    assert read.prompts == ("a cat", "a dog") and read.lines == (1, 2) and read.has_images
    assert read.images == (tmp_path / "pics" / "cat.png", None)
    text = tmp_path / "prompts.txt"
    text.write_text("# mine\na\n\nb\na\n")
    plain = read_prompt_file(text)
    assert plain.prompts == read_prompts(text) == ("a", "b") and plain.lines == (2, 4) and not plain.has_images


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "a cat", "image": "nowhere.png"}, "prompts.jsonl line 2: image: .*nowhere.png: file not found"),
        ({"prompt": "a cat", "image": 3}, "prompts.jsonl line 2: image: must be the path of an image file"),
        ({"prompt": "a cat", "img": "cat.png"}, r"prompts.jsonl line 2: unknown field\(s\) img"),
        ({"prompt": "a dog", "image": "dog.png"}, "prompts.jsonl line 2: prompt repeats line 1's with another image"),
        ({"image": "cat.png"}, "prompts.jsonl line 2: missing field 'prompt'"),
    ],
)
def test_bad_prompt_lines_name_the_line_and_field(tmp_path, line, message):
    for name in ("cat", "dog"):
        test_image(0, 16, 16).save(tmp_path / f"{name}.png")
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "a dog", "image": "cat.png"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=message):
        read_prompt_file(path)


def test_a_model_takes_prompt_images_as_it_takes_images(tiny_family, tmp_path):
    test_image(0, 16, 16).save(tmp_path / "cat.png")
    with_images = tmp_path / "prompts.jsonl"
    with_images.write_text(json.dumps({"prompt": "a dog"}) + "\n" + json.dumps({"prompt": "a cat", "image": "cat.png"}))
    with pytest.raises(ValueError, match=r"prompts.jsonl line 2: image: this Wan model is text-to-video only"):
        read_prompt_file(with_images).check_images(tiny_family("wan"))
    with pytest.raises(ValueError, match=r"prompts.jsonl line 1: no image; this Wan model is image-to-video"):
        read_prompt_file(with_images).check_images(tiny_family("wan-i2v"))
    read_prompt_file(with_images).check_images(tiny_family("ltx"))  # an image is optional on LTX-Video


@pytest.mark.slow
def test_nrg_reward_distill_on_tiny_ltx_then_a_served_job_reports_both_scores(tiny_dir, tmp_path, capsys):
    from server.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "distilled"
    code = main(["reward", "distill", "--model", str(tiny_dir("ltx")), "--prompts", str(prompts), "--judge",
                 "classic:sharpness,exposure", "--out", str(out), "--pool", "2", "--epochs", "1", "--blocks", "1",
                 "--strengths", "4", "--tune-prompts", "1", "--tune-seeds", "1", "--report-seeds", "1",
                 "--steps", "4", "--size", "64x32", "--frames", "9", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "judged by classic:sharpness,exposure (not optimised)" in printed and "serve it: nrg serve" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["guided_vs_unguided"]["per_objective"]) == {"sharpness", "exposure"}
    _serve_and_judge(tiny_dir("ltx"), out / "reward", tmp_path)


def _serve_and_judge(model_dir, reward_dir, tmp_path) -> None:
    """A served, steered request with the distilled reward and a held-out judge."""
    import httpx

    from server.config import ServerConfig, load_models
    from tests.server.conftest import running_server, wait_for

    config = ServerConfig(models={"mine": model_dir}, rewards={"mine": reward_dir}, device="cpu")
    models = load_models(config)
    with running_server(tmp_path / "serve", models, judges={"held_out": "classic:temporal_flickering"}) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            body = {"prompt": "a red ball", "num_inference_steps": 3, "seed": 1, "size": "64x32", "num_frames": 9,
                    "reward_guidance": {"weights": {"sharpness": 1.0}}}
            job = wait_for(client, client.post("/v1/videos", json=body).json()["id"], timeout=600)
    assert job["status"] == "completed", job
    assert set(job["rewards"]) == {"sharpness", "exposure"}
    assert set(job["judge_scores"]["held_out"]) == {"temporal_flickering"}
    assert torch.isfinite(torch.tensor(list(job["rewards"].values()))).all()
