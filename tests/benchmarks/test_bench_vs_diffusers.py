"""``python -m benchmarks.bench_vs_diffusers`` on the tiny Wan pipeline: both sides run the same requests,
the same first video comes out, and the report's figures are consistent."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks import bench_vs_diffusers


def test_server_and_diffusers_run_the_same_requests_in_interleaved_rounds(tiny_dir, tmp_path, capsys):
    out = tmp_path / "vs.json"
    code = bench_vs_diffusers.main(["--model", str(tiny_dir("wan")), "--num-prompts", "3", "--steps", "2",
                                    "--size", "32x32", "--num-frames", "5", "--max-batch", "2", "--rounds", "2",
                                    "--warmup-requests", "1", "--output-file", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    report = captured.out
    assert "Throughput ratio (server/diffusers)" in report and "(median of 2 rounds)" in report
    assert report.count("diffusers pipe(), one by one") == 2
    assert "diffusers round 2/2" in captured.err  # progress while diffusers runs
    result = json.loads(out.read_text())
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        server, plain = r["server"], r["diffusers"]
        assert server["num_requests"] == server["completed"] == plain["requests"] == 3
        assert r["throughput_ratio"] == pytest.approx(server["request_throughput"] / plain["request_throughput"])
        assert plain["frame_throughput"] == pytest.approx(3 * 5 / plain["duration_s"])
        metrics = server["batch_size"]["metrics"]
        assert metrics["sample_steps"] == 3 * 2 and metrics["steps"] >= 2  # 3 requests of 2 steps
    ratios = sorted(r["throughput_ratio"] for r in result["rounds"])
    assert result["throughput_ratio"] == pytest.approx(sum(ratios) / 2)
    # The server's first video and diffusers' pipe() for the same prompt/seed decode to the same frames.
    verify = result["verify"]
    assert verify["same"] and verify["mean_abs_diff_uint8"] < 0.25 * verify["codec_mean_abs_error_uint8"] + 0.5
    assert result["command"].startswith("python -m benchmarks.bench_vs_diffusers --model ")
    assert result["workload"]["guidance_scale"] == 5.0 and result["machine"]


def test_load_warning_only_above_the_core_count():
    assert bench_vs_diffusers.load_warning([1.5, 1.0, 1.0], cores=2) is None
    assert "load average 3.5 exceeds the 2 cores" in bench_vs_diffusers.load_warning([3.5, 1.0, 1.0], cores=2)


def test_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        bench_vs_diffusers.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--rounds" in text and "(default 3)" in text
    assert "(default 16)" in text and not re.search(r"\(default: [0-9.]+\)", text)  # argparse's own, doubled


def test_compare_videos_tells_other_frames_apart(tmp_path):
    import numpy as np

    from guidance.video_io import write_video

    rng = np.random.default_rng(0)
    frames = np.clip(np.cumsum(rng.normal(0, 0.05, (5, 32, 32, 3)), axis=0) + 0.5, 0, 1).astype(np.float32)
    write_video(frames, tmp_path / "server.mp4")
    assert bench_vs_diffusers.compare_videos(tmp_path / "server.mp4", frames, tmp_path, 16)["same"]
    other = np.clip(frames[::-1] * 0.8 + 0.1, 0, 1)
    assert not bench_vs_diffusers.compare_videos(tmp_path / "server.mp4", other, tmp_path, 16)["same"]
