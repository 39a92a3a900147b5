"""``python -m benchmarks.encode_bench`` at a tiny size: both encoders run interleaved, the server's is
deterministic, and the server's own setting is back in place afterwards."""

import json

from benchmarks import encode_bench
from guidance import video_io


def test_both_encoders_run_and_the_servers_setting_is_restored(tmp_path, capsys):
    out = tmp_path / "encode.json"
    assert encode_bench.main(["--frames", "5", "--size", "32x32", "--rounds", "3", "--output-file", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["params"] for r in result["results"]] == ["cpu-independent=0", "cpu-independent=1"]
    assert all(r["median_s"] > 0 for r in result["results"])
    assert result["results"][1]["decoded_variants"] == 1
    assert video_io.X264_PARAMS == "cpu-independent=1"
    assert "| server (cpu-independent) | cpu-independent=1 |" in capsys.readouterr().out
