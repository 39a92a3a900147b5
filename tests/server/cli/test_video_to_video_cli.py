"""Video-to-video from the command line: ``nrg generate --video --denoise-strength`` with reward guidance,
and its refusals."""

import numpy as np
import pytest

from server.cli import main
from tests.server.clips import encode, noise

ARGS = ["--frames", "9", "--size", "32x32", "--steps", "4", "--quiet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    path.write_bytes(encode(noise(9, 48, 48, seed=2)))
    return path


def test_a_guided_generate_from_a_video(tiny_dir, clip, tmp_path, capsys):
    wan = tiny_dir("wan")
    reward = tmp_path / "reward"
    assert main(["init-reward", "--model", str(wan), "--objectives", "vq,mq", "--blocks", "1", str(reward)]) == 0
    outs = {}
    for name, extra in (("plain", []), ("half", ["--denoise-strength", "0.5"]),
                        ("guided", ["--reward", str(reward), "--weights", "vq=1", "--strength", "40", "--mode", "sum",
                                    "--window", "0,1"])):
        outs[name] = tmp_path / f"{name}.npy"
        assert main(["generate", "--model", str(wan), "--prompt", "a red circle", "--video", str(clip), *ARGS,
                     "--out", str(outs[name]), *extra]) == 0
    printed = capsys.readouterr().out
    assert "from " + str(clip) + ": 3 of 4 steps" in printed and ": 2 of 4 steps" in printed
    assert "guided steps: 3," in printed and "(3 denoiser passes)" in printed
    plain, half, guided = (np.load(outs[name]) for name in ("plain", "half", "guided"))
    assert plain.shape == guided.shape == (9, 32, 32, 3)
    assert np.abs(plain - guided).max() > 1e-4 and np.abs(plain - half).max() > 1e-4


def test_generate_refuses_what_video_to_video_cannot_take(tiny_dir, clip, tmp_path, capsys):
    out = ["--out", str(tmp_path / "a.npy")]
    wan = ["generate", "--model", str(tiny_dir("wan")), "--prompt", "p", *ARGS, *out]
    cases = [
        (wan + ["--denoise-strength", "0.5"], "--denoise-strength applies to video-to-video"),
        (wan + ["--video", str(clip), "--denoise-strength", "1.5"], "denoise_strength must be in (0, 1]"),
        (wan + ["--video", str(clip), "--image", str(clip)], "not both"),
        (wan + ["--video", str(tmp_path / "a.npy")], "No such file"),
        (["generate", "--model", str(tiny_dir("wan-i2v")), "--prompt", "p", "--video", str(clip), *ARGS, *out],
         "cannot start from a video"),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit):
            main(argv)
        assert words in capsys.readouterr().err, argv
    short = tmp_path / "short.mp4"
    short.write_bytes(encode(noise(4)))
    with pytest.raises(SystemExit):
        main(wan + ["--video", str(short)])
    assert f"--video {short}: the video has 4 frames" in capsys.readouterr().err
