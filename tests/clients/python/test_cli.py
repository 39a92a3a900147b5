"""``nrg-client`` against a live server: generate (progress, download, rewards), list, get, events,
download, cancel, and one-line errors."""

from __future__ import annotations

import json

import pytest

from guidance.video_io import count_video_frames
from nrg_client.cli import main, score_lines
from nrg_client.types import Video
from tests.clients.conftest import FAST, LONG


def _run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_generate_then_list_get_events_download(server_url, tmp_path, capsys):
    status, out, err = _run(capsys, "--base-url", server_url, "generate", "a red circle", "--seed", "2",
                            "--size", FAST["size"], "--frames", "9", "--steps", "2", "--weights", "ta=1",
                            "--out", str(tmp_path))
    assert status == 0, err
    assert "started in a batch of" in err and "step 2/2" in err
    path = tmp_path / out.splitlines()[0].removeprefix("wrote ").split("/")[-1]
    assert count_video_frames(path) == 9
    video_id = path.stem
    assert out.splitlines()[1].startswith(f"{video_id}  completed") and "ta=" in out

    status, out, _ = _run(capsys, "--base-url", server_url, "list", "--limit", "100")
    assert status == 0 and any(line.startswith(video_id) for line in out.splitlines())
    status, out, _ = _run(capsys, "--base-url", server_url, "get", video_id)
    assert json.loads(out)["reward_guidance"]["weights"] == {"ta": 1.0}
    status, out, _ = _run(capsys, "--base-url", server_url, "events", video_id)
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert kinds[0] == "queued" and kinds[-1] == "completed" and "step" in kinds
    status, out, _ = _run(capsys, "--base-url", server_url, "download", video_id, "--thumbnail",
                          "--out", str(tmp_path / "t.webp"))
    assert status == 0 and (tmp_path / "t.webp").read_bytes()[8:12] == b"WEBP"


def test_cancel_and_errors_are_one_line(server_url, tmp_path, capsys):
    from nrg_client import Client

    with Client(server_url) as client:
        job = client.create("long", size=LONG["size"], num_frames=LONG["num_frames"],
                            num_inference_steps=LONG["num_inference_steps"])
    status, out, _ = _run(capsys, "--base-url", server_url, "cancel", job.id)
    assert status == 0 and f"{job.id}  cancelled" in out
    status, _, err = _run(capsys, "--base-url", server_url, "get", "video_nope")
    assert status == 1 and err.startswith("nrg-client: error: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", "--weights", "vq"])
    assert exit_info.value.code == 2
    assert "weights must be name=value" in capsys.readouterr().err


def test_generate_compares_with_the_unguided_twin(server_url, tmp_path, capsys):
    status, out, err = _run(capsys, "--base-url", server_url, "generate", "a red circle", "--seed", "2",
                            "--size", FAST["size"], "--frames", "9", "--steps", "2", "--weights", "ta=1",
                            "--compare-unguided", "--quiet", "--out", str(tmp_path))
    assert status == 0, err
    assert "unguided twin, optimised reward: vq=" in out
    assert "reward hacking: not judged" in out  # this server has no held-out judges


def test_the_twin_lines_flag_what_the_server_flagged():
    change = {"objective": "vq", "judge": "truth", "weight": 1.0, "reward_change": 0.3, "judge_change": -0.02,
              "hacked": True}
    video = Video.model_validate({
        "id": "video_1", "model": "m", "status": "completed", "created_at": 0, "prompt": "p", "size": "8x8",
        "seconds": "1", "width": 8, "height": 8, "num_frames": 9, "fps": 8, "seed": 0, "num_inference_steps": 2,
        "guidance_scale": 5.0, "compare_unguided": True, "rewards": {"vq": 1.3},
        "unguided": {"rewards": {"vq": 1.0}, "judge_scores": {"truth": {"vq": 0.5}}, "changes": [change],
                     "error": None},
        "reward_hacking": [change]})
    lines = score_lines(video)
    assert "vs unguided, vq: reward +0.3, judge truth -0.02" in lines
    assert lines[-1] == "REWARD HACKING: guidance raised vq while judge truth says it fell"
    assert score_lines(video.model_copy(update={"unguided": None, "reward_hacking": None})) == [
        "optimised reward (what guidance pushed up): vq=1.3000"]


def test_generate_takes_an_image_or_a_video_and_a_denoise_strength(capsys):
    from nrg_client.cli import build_parser

    args = build_parser().parse_args(["generate", "p", "--video", "clip.mp4", "--denoise-strength", "0.6"])
    assert str(args.input_reference) == "clip.mp4" and args.denoise_strength == 0.6
    assert str(build_parser().parse_args(["generate", "p", "--image", "a.png"]).input_reference) == "a.png"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "p", "--image", "a.png", "--video", "clip.mp4"])
    assert "not allowed with argument" in capsys.readouterr().err
