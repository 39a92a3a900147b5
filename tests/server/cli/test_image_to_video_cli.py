"""Image-to-video from the command line: ``nrg make-tiny --i2v`` (and ``--variant`` for Wan 2.2's), ``nrg
init-reward`` on an I2V model, ``nrg generate --image`` with reward guidance, and a reward for an I2V model
trained (``nrg train-reward``) and distilled (``nrg reward distill``) from prompts with first frames."""

import json

import numpy as np
import pytest
from PIL import Image

from server.cli import main


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-i2v") / "wan-i2v"
    assert main(["make-tiny", "--family", "wan", "--i2v", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "first.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_make_tiny_i2v_init_reward_and_a_guided_generate_with_an_image(i2v_dir, image, tmp_path, capsys):
    assert '"_class_name": "WanImageToVideoPipeline"' in (i2v_dir / "model_index.json").read_text()
    reward = tmp_path / "reward"
    assert main(["init-reward", "--model", str(i2v_dir), "--objectives", "vq,mq", "--blocks", "1", str(reward)]) == 0
    outs = {}
    for name, extra in (("plain", []), ("guided", ["--reward", str(reward), "--weights", "vq=1", "--strength", "40",
                                                   "--mode", "sum", "--window", "0,1"])):
        outs[name] = tmp_path / f"{name}.npy"
        assert main(["generate", "--model", str(i2v_dir), "--prompt", "a red circle", "--image", str(image), "--quiet",
                     "--out", str(outs[name]), *extra]) == 0
    printed = capsys.readouterr().out
    assert "optimised reward" in printed and "guided steps: 3," in printed  # t = 1 is never guided
    plain, guided = (np.load(outs[name]) for name in ("plain", "guided"))
    assert plain.shape == guided.shape == (9, 32, 32, 3) and np.abs(plain - guided).max() > 1e-4


def test_generate_refuses_a_missing_or_unwanted_image(i2v_dir, image, tiny_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(i2v_dir), "--prompt", "p", "--quiet", "--out", str(tmp_path / "a.npy")])
    assert "image-to-video: every sample needs an image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tiny_dir("wan")), "--prompt", "p", "--image", str(image), "--frames", "9",
              "--size", "32x32", "--steps", "2", "--quiet", "--out", str(tmp_path / "b.npy")])
    assert "text-to-video only" in capsys.readouterr().err
    wide = tmp_path / "wide.png"
    Image.new("RGB", (96, 32)).save(wide)
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(i2v_dir), "--prompt", "p", "--image", str(wide), "--quiet",
              "--out", str(tmp_path / "c.npy")])
    assert "input_reference_aspect_tolerance" in capsys.readouterr().err


def test_distill_refuses_prompts_without_images_for_an_i2v_model_and_images_for_a_t2v_one(i2v_dir, image, tiny_dir,
                                                                                          tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red circle\na blue square\n")
    with pytest.raises(SystemExit):
        main(["reward", "distill", "--model", str(i2v_dir), "--prompts", str(prompts), "--judge", "classic",
              "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert f"{prompts} line 2: no image; this Wan model is image-to-video" in err and err.count("\n") == 1, err
    with_images = tmp_path / "prompts.jsonl"
    with_images.write_text(json.dumps({"prompt": "a red circle", "image": str(image)}) + "\n")
    with pytest.raises(SystemExit):
        main(["reward", "distill", "--model", str(tiny_dir("wan")), "--prompts", str(with_images), "--judge", "classic",
              "--out", str(tmp_path / "r")])
    assert f"{with_images} line 1: image: this Wan model is text-to-video only" in capsys.readouterr().err


def test_train_reward_on_pairs_with_first_frames(i2v_dir, image, tmp_path):
    from guidance.train.preference_data import write_pairs
    from tests.guidance.train.synthetic import OBJECTIVES, latent_records

    data = write_pairs(tmp_path / "data", OBJECTIVES,
                       [{**record, "image": image} for record in latent_records((16, 3, 4, 4), 4)])
    assert main(["train-reward", "--model", str(i2v_dir), "--data", str(data), "--out", str(tmp_path / "reward"),
                 "--blocks", "1", "--epochs", "1", "--quiet"]) == 0
    report = json.loads((tmp_path / "reward" / "training_report.json").read_text())
    assert report["steps"] == 1 and report["accuracy"]["pairs"] == 1


@pytest.mark.slow
def test_reward_distill_on_tiny_wan_i2v_then_generate_with_it(i2v_dir, tmp_path, capsys):
    """From an I2V directory and prompts with first frames to a reward the model loads and steers with; the
    pool's samples start from their prompt's image (each equals the sample of that image and seed alone)."""
    from safetensors.torch import load_file

    from guidance.families import load_pipeline
    from guidance.families.base import VideoShape
    from guidance.images import fit_image, read_image
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample
    from guidance.train.distill import POOL_SEED_BASE

    lines = []
    for i, prompt in enumerate(("a red ball", "a blue cube spinning", "a green field")):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            tmp_path / f"first{i}.png")
        lines.append(json.dumps({"prompt": prompt, "image": f"first{i}.png"}) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(lines))
    out = tmp_path / "distilled"
    assert main(["reward", "distill", "--model", str(i2v_dir), "--prompts", str(prompts), "--judge",
                 "classic:sharpness,exposure", "--out", str(out), "--pool", "2", "--epochs", "1", "--blocks", "1",
                 "--strengths", "4", "--tune-prompts", "1", "--tune-seeds", "1", "--report-seeds", "1", "--quiet"]) == 0
    assert "judged by classic:sharpness,exposure (not optimised)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    assert [row["image"] for row in rows] == [f"images/00000{i}.png" for i in range(3)]
    family = load_pipeline(i2v_dir)
    reward = load_reward_model(out / "reward", family)
    assert reward.objectives == ("sharpness", "exposure") and reward.calibration.samples == 6
    shape = VideoShape(height=32, width=32, frames=9)
    alone = sample(family, [SampleSpec("a green field", seed=POOL_SEED_BASE + 2 * 2,
                                       image=fit_image(read_image(tmp_path / "first2.png"), 32, 32))], shape, 4)
    assert (load_file(str(out / "pool" / "00002.safetensors"))["latents"][0] - alone.latents[0]).abs().max() <= 1e-4
    assert main(["generate", "--model", str(i2v_dir), "--prompt", "a red ball", "--image", str(tmp_path / "first0.png"),
                 "--reward", str(out / "reward"), "--weights", "sharpness=1", "--quiet",
                 "--out", str(tmp_path / "steered.npy")]) == 0
    assert "optimised reward" in capsys.readouterr().out


@pytest.mark.parametrize("variant, config", [("i2v-a14b", {"boundary_ratio": 0.8, "expand_timesteps": False}),
                                             ("ti2v-5b", {"boundary_ratio": None, "expand_timesteps": True})])
def test_make_tiny_variant_writes_a_wan_2_2_i2v_pipeline_that_generates_from_an_image(variant, config, image,
                                                                                       tmp_path, capsys):
    out = tmp_path / variant
    assert main(["make-tiny", "--family", "wan", "--variant", variant, str(out)]) == 0
    assert f"wrote tiny wan image-to-video ({variant}) pipeline" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline" and index["image_encoder"] == [None, None]
    assert {key: index[key] for key in config} == config
    assert (index["transformer_2"] != [None, None]) == (variant == "i2v-a14b")
    assert main(["generate", "--model", str(out), "--prompt", "a red circle", "--image", str(image), "--quiet",
                 "--out", str(tmp_path / "v.npy")]) == 0
    assert np.load(tmp_path / "v.npy").shape == (9, 32, 32, 3)


def test_make_tiny_refuses_a_variant_of_another_family(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["make-tiny", "--family", "ltx", "--variant", "ti2v-5b", str(tmp_path / "p")])
    assert "no image-to-video variant 'ti2v-5b' for family 'ltx'" in capsys.readouterr().err
