import json

import pytest

from guidance.reward_model import CONFIG_NAME, WEIGHTS_NAME
from guidance.train.preference_data import write_pairs
from guidance.train.reward import REPORT_NAME
from server.cli import main
from tests.guidance.train.synthetic import OBJECTIVES, clip_records, latent_records

WAN_LATENT = (16, 3, 4, 4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("prefs"), OBJECTIVES, latent_records(WAN_LATENT, 12))


def test_train_reward_end_to_end(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "reward"
    argv = ["train-reward", "--model", str(tiny_dir("wan")), "--data", str(data_dir), "--out", str(out),
            "--objectives", "bright,other", "--blocks", "1", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
            "--t-min", "0.1", "--t-max", "0.9", "--seed", "3", "--quiet"]
    assert main(argv) == 0
    assert (out / CONFIG_NAME).is_file() and (out / WEIGHTS_NAME).is_file()
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["objectives"] == ["bright", "other"] and report["num_blocks"] == 1 and len(report["loss"]) == 2
    assert report["args"]["t_min"] == 0.1 and report["args"]["seed"] == 3
    assert set(report["accuracy"]["objectives"]) == {"bright", "other"}
    assert all(0.0 <= a <= 1.0 for a in report["accuracy"]["objectives"]["bright"]["accuracy"])
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "t=0.125" in printed
    # Resume from it for one more epoch, head only, with the generate command's reward flag working on it.
    assert main(["train-reward", "--model", str(tiny_dir("wan")), "--data", str(data_dir), "--out",
                 str(tmp_path / "more"), "--init", str(out), "--epochs", "1", "--freeze-trunk", "--quiet"]) == 0
    assert json.loads((tmp_path / "more" / REPORT_NAME).read_text())["args"]["freeze_trunk"] is True


def test_train_reward_on_the_embedded_default_from_clips(tmp_path):
    from guidance import demo

    shape = demo.DEFAULT_SHAPE
    data = write_pairs(tmp_path / "clips", ["bright"], clip_records(shape.frames, shape.height, shape.width, 2),
                       kind="clips")
    assert main(["train-reward", "--data", str(data), "--out", str(tmp_path / "r"), "--blocks", "1",
                 "--epochs", "1", "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / REPORT_NAME).read_text())["data"]["train_pairs"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--t-min", "0.5", "--t-max", "0.5"], "need 0 <= t-min < t-max <= 1"),
        (["--batch-size", "0"], "batch size must be >= 1"),
        (["--objectives", "bright,speed"], "objective(s) speed not in the data set"),
        (["--objectives", ","], "--objectives must name at least one objective"),
        (["--init", "/nonexistent/reward"], "is not a reward model directory"),
    ],
)
def test_bad_train_reward_flags_exit_2_with_one_line(tiny_dir, data_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["train-reward", "--model", str(tiny_dir("wan")), "--data", str(data_dir), "--out", str(tmp_path),
              "--quiet", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nrg: error: ") and message in err and err.count("\n") == 1, err


def test_malformed_data_set_exits_2_naming_the_line(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"objectives": ["vq"]}))
    (data / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "a": "x.npy", "b": "x.npy", "labels": {"vq": "A"}}))
    with pytest.raises(SystemExit) as exc:
        main(["train-reward", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"])
    assert exc.value.code == 2
    assert "pairs.jsonl line 1: a: file not found: x.npy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-reward", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert "is not a directory" in capsys.readouterr().err
