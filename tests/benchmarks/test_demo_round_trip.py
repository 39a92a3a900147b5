"""The round-trip figures of the demo metrics' references and demo world v2's targets."""

from benchmarks import demo_round_trip
from demo_world import world
from demo_world.metrics import evaluate_clip


def test_prints_rendered_round_trip_and_sample_rows_then_every_target(capsys):
    demo_round_trip.main(["--samples-per-prompt", "1"])
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "rendered (48)", "their VAE round trip (48)", "the model's samples, held-out prompts (8)"]
    median_mq = [float(r.split("|")[6]) for r in rows]
    assert median_mq[0] > median_mq[1] > median_mq[2]  # the VAE costs motion quality, the model more
    targets = [line for line in out if "target >=" in line]
    assert len(targets) == 7 and all(line.endswith(("met", "MISSED")) for line in targets)


def test_targets_are_judged_against_their_bounds():
    clips = [(world.render(p, 5), p) for p in world.eval_prompts()]
    perfect = [evaluate_clip(c, p) for c, p in clips]
    blank = [evaluate_clip(c * 0.0, p) for c, p in clips]
    lines = demo_round_trip.target_lines(perfect, blank)
    assert lines[0].startswith("round trip median VQ: 1.000") and lines[0].endswith(" met")
    assert lines[1].startswith("headroom of the samples' median VQ below it: 1.000")
    assert all(line.endswith("MISSED") for line in lines[4:])  # a blank clip reads nothing
    assert all(line.endswith(" met") for line in demo_round_trip.target_lines(perfect, perfect)[4:])
