"""The round-trip figures of the demo metrics' references: one row per kind of clip, in order."""

from benchmarks import demo_round_trip


def test_prints_rendered_round_trip_and_sample_rows(capsys):
    demo_round_trip.main(["--samples-per-prompt", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "rendered (48)", "their VAE round trip (48)", "the model's samples, held-out prompts (8)"]
    median_mq = [float(r.split("|")[5]) for r in rows]
    assert median_mq[0] > median_mq[1] > median_mq[2]  # the VAE costs motion quality, the model more
