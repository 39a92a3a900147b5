"""Image-to-video from the command line: ``nrg make-tiny --i2v`` (and ``--variant`` for Wan 2.2's), ``nrg
init-reward`` on an I2V model and ``nrg generate --image`` with reward guidance."""

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


def test_training_from_prompts_alone_refuses_an_image_to_video_model(i2v_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    with pytest.raises(SystemExit):
        main(["reward", "distill", "--model", str(i2v_dir), "--prompts", str(prompts), "--judge", "classic",
              "--out", str(tmp_path / "r")])
    assert "is image-to-video" in capsys.readouterr().err


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
