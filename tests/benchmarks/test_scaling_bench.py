"""``python -m benchmarks.scaling_bench`` at a tiny workload on the tiny Wan pipeline: a real PostgreSQL,
one API process and 1 then 2 worker processes; each count's throughput, speedup and efficiency."""

import json

import pytest

from benchmarks import scaling_bench
from tools.local_postgres import bin_dir

pytestmark = pytest.mark.slow


def test_one_and_two_workers_report_throughput_speedup_and_efficiency(tiny_dir, tmp_path, capsys):
    if bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    out, md = tmp_path / "scaling.json", tmp_path / "scaling.md"
    code = scaling_bench.main(["--model", str(tiny_dir("wan")), "--workers", "1,2", "--rounds", "1",
                               "--num-prompts", "2", "--steps", "2", "--size", "32x32", "--num-frames", "9", "--max-batch", "2", "--threads", "1",
                               "--output-file", str(out), "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    (only,) = result["scaling"]["rounds"]
    assert only["order"] == [1, 2]
    phases = only["phases"]
    assert set(phases) == {"1", "2"}
    for n, phase in phases.items():
        assert phase["throughput"] > 0 and phase["threads"] == 1
        assert phase["speedup"] == pytest.approx(phase["throughput"] / phases["1"]["throughput"])
        assert phase["efficiency"] == pytest.approx(phase["speedup"] / int(n))
    assert phases["1"]["speedup"] == pytest.approx(1.0)
    median = result["scaling"]["median"]
    assert median["2"]["efficiency"] == pytest.approx(median["2"]["speedup"] / 2)
    assert result["cores"] >= 1 and len(result["load_start"]) == 3
    text = md.read_text()
    assert "| workers | threads each | throughput (req/s) | speedup vs 1 | efficiency (speedup / N) |" in text
    assert result["command"] in text and text.strip() in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "two"], "--workers must be integers"),
    (["--workers", "2,4"], "--workers must include 1"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        scaling_bench.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
