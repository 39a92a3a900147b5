"""``python -m benchmarks.batching_bench`` on the embedded demo model at a tiny workload: both modes
serve the same requests in interleaved rounds, the step-scaling part times batch sizes, and the
guidance-cost part times its three batches."""

import json
import math

import pytest

from benchmarks import batching_bench


def test_both_modes_run_in_alternating_rounds_and_report_their_ratios(tmp_path, capsys):
    out, md = tmp_path / "batching.json", tmp_path / "batching.md"
    code = batching_bench.main(["--rounds", "2", "--num-prompts", "2", "--steps-mix", "2,3", "--max-batch", "2",
                                "--repeats", "1", "--guidance-steps", "2", "--output-file", str(out),
                                "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    serving, cost = result["serving"], result["guidance"]
    assert [r["order"] for r in serving["rounds"]] == [["static", "continuous"], ["continuous", "static"]]
    for r in serving["rounds"]:
        for mode in ("static", "continuous"):
            assert r[mode]["throughput"] > 0 and 0 < r[mode]["p50"] <= r[mode]["p99"] and r[mode]["batch"] >= 1
        assert r["p50_ratio"] == pytest.approx(r["continuous"]["p50"] / r["static"]["p50"])
    assert serving["offered_req_s"] == pytest.approx(0.9 * serving["capacity_req_s"])
    assert set(cost["per_clip_s"]) == {"none", "half", "all"} and all(v > 0 for v in cost["per_clip_s"].values())
    assert cost["half_ratio"] == pytest.approx(cost["per_clip_s"]["half"] / cost["per_clip_s"]["none"])
    assert math.isfinite(serving["median_p50_ratio"]) and math.isfinite(serving["median_throughput_ratio"])
    scaling = result["scaling"]
    assert set(scaling["step_s"]) == {"1", "2"} and all(v > 0 for v in scaling["step_s"].values())
    assert scaling["per_sample_gain"]["1"] == pytest.approx(1.0)
    text = md.read_text()
    assert "| median |" in text and "| half |" in text and "per-sample throughput" in text and result["command"] in text
    assert text.strip() in capsys.readouterr().out


def test_a_bounded_continuous_server_runs_in_the_same_rotated_rounds(tmp_path):
    out = tmp_path / "batching.json"
    assert batching_bench.main(["--rounds", "3", "--num-prompts", "2", "--steps-mix", "2", "--max-batch", "2",
                                "--repeats", "1", "--step-slowdown", "1.5", "--skip", "scaling", "--skip", "guidance",
                                "--output-file", str(out)]) == 0
    serving = json.loads(out.read_text())["serving"]
    assert [r["order"] for r in serving["rounds"]] == [["static", "continuous", "bounded"],
                                                       ["continuous", "bounded", "static"],
                                                       ["bounded", "static", "continuous"]]
    assert serving["step_slowdown"] == 1.5 and set(serving["median_ratios"]) == {"continuous", "bounded"}
    for r in serving["rounds"]:
        assert r["ratios"]["bounded"]["p50"] == pytest.approx(r["bounded"]["p50"] / r["static"]["p50"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps-mix", "ten"], "--steps-mix must be integers"),
    (["--max-batch", "1"], "--max-batch must be >= 2"),
    (["--load", "0"], "--load must be > 0"),
    (["--step-slowdown", "0.5"], "--step-slowdown must be >= 1"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        batching_bench.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
