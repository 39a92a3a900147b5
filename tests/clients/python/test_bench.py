"""nrg-bench: the workload it builds, its statistics, and tiny runs against a live server whose JSON
counts must match the requests sent."""

from __future__ import annotations

import json
import math

import pytest

from nrg_client import bench

METRICS_BEFORE = """# HELP nrg_batch_size Samples per executed batch
nrg_batch_size_bucket{le="1.0",worker="local"} 2.0
nrg_batch_size_bucket{le="2.0",worker="local"} 2.0
nrg_batch_size_bucket{le="4.0",worker="local"} 3.0
nrg_batch_size_bucket{le="+Inf",worker="local"} 3.0
nrg_batch_size_count{worker="local"} 3.0
nrg_batch_size_sum{worker="local"} 6.0
"""
METRICS_AFTER = """# HELP nrg_batch_size Samples per executed batch
nrg_batch_size_bucket{le="1.0",worker="local"} 2.0
nrg_batch_size_bucket{le="2.0",worker="local"} 4.0
nrg_batch_size_bucket{le="4.0",worker="local"} 6.0
nrg_batch_size_bucket{le="+Inf",worker="local"} 6.0
nrg_batch_size_count{worker="local"} 6.0
nrg_batch_size_sum{worker="local"} 14.0
"""


def test_workload_is_deterministic_with_exact_guided_count():
    a = bench.build_workload(10, ["vq", "mq", "ta"], "random", 0.3, seed=7, prompts=["x", "y"])
    b = bench.build_workload(10, ["vq", "mq", "ta"], "random", 0.3, seed=7, prompts=["x", "y"])
    assert a == b and sum(r.guided for r in a) == 3 and len({r.seed for r in a}) == 10
    for r in a:
        if r.guided:
            assert set(r.weights) == {"vq", "mq", "ta"} and math.isclose(sum(r.weights.values()), 1.0, abs_tol=1e-5)
    fixed = bench.build_workload(4, ["vq", "ta"], "fixed", 1.0, seed=1, prompts=["x"])
    assert [r.weights for r in fixed] == [{"vq": 0.5, "ta": 0.5}] * 4
    explicit = bench.build_workload(2, ["vq", "ta"], "ta=2", 0.5, seed=1, prompts=["x"])
    assert [r.weights for r in explicit if r.guided] == [{"ta": 2.0}]
    with pytest.raises(ValueError, match="not objectives"):
        bench.build_workload(2, ["vq"], "zz=1", 1.0, seed=1, prompts=["x"])
    with pytest.raises(ValueError, match="no reward objectives"):
        bench.build_workload(2, [], "fixed", 0.5, seed=1, prompts=["x"])


def test_statistics():
    assert bench.percentile([1, 2, 3, 4], 50) == 2.5 and bench.percentile([5], 99) == 5
    assert bench.percentile([0, 10], 90) == pytest.approx(9.0) and bench.percentile([], 50) is None
    delta = bench.histogram_delta(bench.parse_histogram(METRICS_BEFORE, "nrg_batch_size"),
                                  bench.parse_histogram(METRICS_AFTER, "nrg_batch_size"))
    assert delta == {"steps": 3, "sample_steps": 8.0, "mean": 8 / 3, "histogram": {"<=2": 2, "<=4": 1}}


def test_closed_loop_run_counts_match(server_url, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--base-url", server_url, "--num-prompts", "4", "--warmup-requests", "1",
                       "--max-concurrency", "2", "--size", "32x32", "--num-frames", "5", "--steps", "2",
                       "--guided-fraction", "0.5", "--weights", "random", "--seed", "3", "--output-file", str(out),
                       "--disable-tqdm"])
    assert code == 0
    table = capsys.readouterr().out
    assert "Request throughput (req/s)" in table and "Mean batch size (/metrics)" in table
    result = json.loads(out.read_text())
    assert result["num_requests"] == 4 and result["warmup_requests"] == 1
    assert result["completed"] == 4 and result["failed"] == 0 and result["errors"] == {}
    assert result["guided"] == 2 and result["unguided"] == 2 and len(result["requests"]) == 4
    assert [r["index"] for r in result["requests"]] == [0, 1, 2, 3]
    assert {r["status"] for r in result["requests"]} == {"completed"}
    assert len({r["id"] for r in result["requests"]}) == 4
    assert result["shapes"] == [{"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}]
    assert result["request_throughput"] == pytest.approx(4 / result["duration_s"])
    assert result["frame_throughput"] == pytest.approx(4 * 5 / result["duration_s"])
    assert 0 < result["latency_s"]["p50"] <= result["latency_s"]["p99"] <= result["latency_s"]["max"]
    assert result["queue_time_s"]["mean"] >= 0 and result["inference_time_s"]["mean"] > 0
    # Every measured job took its 2 steps in the measured window, each step observed by /metrics.
    batches = result["batch_size"]
    assert batches["metrics"]["sample_steps"] == 4 * 2 and sum(batches["jobs"]["histogram"].values()) == 4
    assert all(1 <= r["batch_size"] <= 2 for r in result["requests"])  # max concurrency 2
    probe = result["guided_vs_unguided"]["probe"]
    assert probe["batch_sizes"] == [1] and probe["inference_ratio"] > 0
    assert result["guided_vs_unguided"]["inference_ratio"] > 0


def test_open_loop_poisson_with_polling(server_url, tmp_path):
    out = tmp_path / "bench.json"
    code = bench.main(["--base-url", server_url, "--num-prompts", "3", "--warmup-requests", "0",
                       "--request-rate", "20", "--completion", "poll", "--size", "32x32", "--num-frames", "5",
                       "--steps", "1", "--guided-fraction", "1", "--weights", "vq=1", "--guidance-probes", "0",
                       "--output", str(out), "--no-progress"])
    result = json.loads(out.read_text())
    assert code == 0 and result["completed"] == 3 and result["guided"] == 3
    assert [r["weights"] for r in result["requests"]] == [{"vq": 1.0}] * 3
    assert result["guided_vs_unguided"]["probe"] is None and result["config"]["request_rate"] == 20


def test_errors_are_counted_by_kind(server_url, tmp_path):
    out = tmp_path / "bench.json"
    code = bench.main(["--base-url", server_url, "--num-prompts", "2", "--warmup-requests", "0", "--steps", "401",
                       "--guided-fraction", "0", "--output", str(out), "--disable-tqdm"])
    result = json.loads(out.read_text())
    assert code == 1 and result["num_requests"] == 2 and result["completed"] == 0 and result["failed"] == 2
    assert result["errors"] == {"http_400_invalid_value": 2} and result["latency_s"]["mean"] is None
