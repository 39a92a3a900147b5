"""The ``nrg`` command line, run in-process."""

import re

import numpy as np
import pytest

from guidance.video_io import count_video_frames
from server.cli import main


@pytest.fixture(scope="module")
def reward_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward")
    assert main(["init-reward", "--model", str(tiny_dir("wan")), "--objectives", "vq,mq,ta", "--blocks", "1",
                 str(out)]) == 0
    return out


def _generate(model, out, *extra):
    return main(["generate", "--model", str(model), "--prompt", "a red circle moving left", "--frames", "9",
                 "--size", "32x32", "--steps", "3", "--quiet", "--out", str(out), *extra])


def test_make_tiny_writes_a_small_pipeline_with_small_defaults(tmp_path, capsys):
    assert main(["make-tiny", "--family", "wan", str(tmp_path / "p")]) == 0
    size = sum(f.stat().st_size for f in (tmp_path / "p").rglob("*") if f.is_file())
    assert (tmp_path / "p" / "model_index.json").is_file() and size < 2_000_000
    assert "(defaults in nrg_defaults.json: 32x32, 9 frames, 4 steps)" in capsys.readouterr().out
    # generate without --size/--frames/--steps takes the directory's defaults, not Wan's 832x480x81.
    assert main(["generate", "--model", str(tmp_path / "p"), "--prompt", "x", "--quiet",
                 "--out", str(tmp_path / "d.npy")]) == 0
    assert np.load(tmp_path / "d.npy").shape == (9, 32, 32, 3)
    assert "(9 frames, 32x32, 4 steps, seed 0)" in capsys.readouterr().out


def test_generate_mp4_is_a_playable_video_with_the_right_frame_count(tiny_dir, tmp_path, capsys):
    assert _generate(tiny_dir("wan"), tmp_path / "v.mp4") == 0
    assert count_video_frames(tmp_path / "v.mp4") == 9
    assert "wrote" in capsys.readouterr().out


def test_generate_npy_is_float_frames_in_unit_range(tiny_dir, tmp_path):
    assert _generate(tiny_dir("wan"), tmp_path / "v.npy", "--seed", "4") == 0
    frames = np.load(tmp_path / "v.npy")
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_generate_with_reward_guidance_prints_rewards(tiny_dir, reward_dir, tmp_path, capsys):
    assert _generate(tiny_dir("wan"), tmp_path / "g.npy", "--reward", str(reward_dir), "--weights", "vq=1,ta=0.5",
                     "--strength", "20", "--window", "0,0.9") == 0
    out = capsys.readouterr().out
    assert "optimised reward (what guidance pushed up), final latents: vq=" in out and "mq=" in out and "ta=" in out
    assert "guidance: mode relative, strength 20, window [0.0, 0.9]" in out
    assert "guided steps: 2" in out and "(3 denoiser passes)" in out
    # Measured time: the reward backward of the 2 guided steps on top of what the unguided row costs.
    assert float(re.search(r"cost vs unguided: ([0-9.]+)x its measured time", out).group(1)) > 1


def test_generate_best_of_n_reports_its_particles_and_cost(tiny_dir, reward_dir, tmp_path, capsys):
    assert _generate(tiny_dir("wan"), tmp_path / "b.npy", "--reward", str(reward_dir), "--weights", "ta=1",
                     "--mode", "best_of_n", "--particles", "3", "--window", "0,1") == 0
    out = capsys.readouterr().out
    assert "guidance: mode best_of_n, strength 1, window [0.0, 1.0], 3 particles" in out
    assert "guided steps: 0" in out and "cost vs unguided: 1.00x" not in out  # the particles cost more


class _Brightness:
    """A judge with an objective of the reward's name (``vq``), so that the twin's changes can be judged."""

    objectives = ("vq",)
    differentiable = frozenset()

    def score(self, frames, prompts, fps=16.0):
        return frames.float().mean((1, 2, 3, 4))[:, None]


def brightness_as_vq(device: str) -> _Brightness:
    return _Brightness()


def test_generate_compares_with_its_unguided_twin(tiny_dir, reward_dir, tmp_path, capsys):
    judge = "bright=tests.server.test_cli:brightness_as_vq"
    assert _generate(tiny_dir("wan"), tmp_path / "t.npy", "--reward", str(reward_dir), "--weights", "vq=1",
                     "--strength", "20", "--window", "0,1", "--judge", judge, "--compare-unguided") == 0
    out = capsys.readouterr().out
    assert "unguided twin, optimised reward: vq=" in out
    change = re.search(r"vs unguided, vq: reward [+-][0-9.e+-]+, judge bright [+-][0-9.e+-]+(  REWARD HACKING)?", out)
    assert change, out
    assert ("reward hacking: none" in out) != bool(change.group(1))  # the verdict is the flag's
    alone = np.load(tmp_path / "t.npy")
    assert alone.shape == (9, 32, 32, 3)  # the guided video only


def test_generate_compare_unguided_needs_guidance(tiny_dir, reward_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _generate(tiny_dir("wan"), tmp_path / "x.npy", "--reward", str(reward_dir), "--compare-unguided")
    assert exit_info.value.code == 2
    assert "--compare-unguided needs active guidance" in capsys.readouterr().err


def test_generate_without_model_uses_the_embedded_default_and_its_reward(tmp_path, capsys):
    assert main(["generate", "--prompt", "a blue square", "--steps", "2", "--quiet", "--out",
                 str(tmp_path / "d.npy")]) == 0
    assert np.load(tmp_path / "d.npy").shape == (17, 64, 64, 3)
    out = capsys.readouterr().out
    assert "reward model: the embedded demo reward (objectives vq, mq, ta)" in out
    assert "optimised reward (what guidance pushed up), final latents: vq=" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "zz=1"], "unknown objective 'zz'"),
        (["--weights", "vq=nan"], "weights.vq must be a finite number"),
        (["--weights", "vq=1", "--strength", "-3"], "strength must be a finite number >= 0"),
        (["--weights", "vq=1", "--window", "0.9,0.1"], "window must satisfy"),
    ],
)
def test_bad_guidance_flags_exit_2_with_a_message(tiny_dir, reward_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        _generate(tiny_dir("wan"), tmp_path / "x.npy", "--reward", str(reward_dir), *extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weights", "vq=1"], "need --reward"),
        (["--size", "32by32"], "size must be WIDTHxHEIGHT"),
        (["--frames", "8"], "frames must be 4*k + 1"),
        (["--size", "30x32"], "width must be a positive multiple of 16"),
    ],
)
def test_bad_flags_exit_2_with_a_message(tiny_dir, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tiny_dir("wan")), "--prompt", "p", "--steps", "2", "--quiet",
              "--out", str(tmp_path / "x.npy"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unsupported_model_directory_names_the_supported_families(tmp_path, capsys):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tmp_path), "--prompt", "p", "--out", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert "unsupported pipeline class 'StableDiffusionPipeline'" in err and "wan (WanPipeline)" in err


def test_bad_output_suffix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "p", "--out", str(tmp_path / "x.gif")])
    assert "--out must end in .mp4 or .npy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("family", "size", "cfg_kwargs"),
    [
        ("wan", "32x32", {"guidance_scale": 4.0}),
        ("ltx", "64x32", {"guidance_scale": 4.0}),
        ("hunyuan", "32x32", {"true_cfg_scale": 4.0, "guidance_scale": 6.0}),
        ("cogvideox", "32x32", {"guidance_scale": 4.0}),
    ],
)
def test_generate_equals_the_diffusers_pipeline_for_every_family(tiny_dir, tiny_family, tmp_path, family, size,
                                                                 cfg_kwargs):
    import torch

    out = tmp_path / "v.npy"
    assert main(["generate", "--model", str(tiny_dir(family)), "--prompt", "a red circle moving left",
                 "--negative-prompt", "blurry", "--frames", "9", "--size", size, "--steps", "3", "--cfg", "4",
                 "--seed", "11", "--quiet", "--out", str(out)]) == 0
    width, height = (int(v) for v in size.split("x"))
    expected = tiny_family(family).pipe(
        prompt="a red circle moving left", negative_prompt="blurry", height=height, width=width, num_frames=9,
        num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(11), output_type="np", **cfg_kwargs,
    ).frames[0]
    assert np.abs(np.load(out) - expected).max() <= 1e-4


def test_generate_with_a_step_cache_says_how_many_calls_it_skipped(tiny_dir, tmp_path, capsys):
    assert _generate(tiny_dir("wan"), tmp_path / "c.npy", "--step-cache", "0.3", "--steps", "8") == 0
    skipped = int(re.search(r"step cache: (\d+) of the denoiser calls", capsys.readouterr().out).group(1))
    assert 0 < skipped <= 2 * 7  # CFG's two calls a step; the first step of each computes
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tiny_dir("ltx")), "--prompt", "x", "--quiet", "--step-cache", "0.3",
              "--out", str(tmp_path / "l.npy")])
    assert "step caching supports Wan models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _generate(tiny_dir("wan"), tmp_path / "d.npy", "--step-cache", "0.3", "--compile", "eager")
    assert "--step-cache and --compile do not go together" in capsys.readouterr().err
