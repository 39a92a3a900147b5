"""A generation that goes NaN fails (the job, or ``nrg generate``) with an error naming the step."""

from __future__ import annotations

import httpx
import pytest

from server.cli import generate, main
from server.hosted_model import HostedModel
from tests.guidance.nan_family import NanWan
from tests.server.conftest import HANG_S, running_server, wait_for

BODY = {"prompt": "a red circle", "num_inference_steps": 3}


def test_a_nan_sample_fails_alone_and_its_batch_mate_completes(hosted_wan, tmp_path):
    nan = HostedModel("nan", NanWan(hosted_wan.family.pipe), None, None, hosted_wan.default_shape, 3)
    with running_server(tmp_path, {"nan": nan}, max_batch=2,
                        batch_wait_ms=HANG_S * 1000) as (url, app):  # starts once both are queued
        with httpx.Client(base_url=url, timeout=60) as client:
            bad = client.post("/v1/videos", json={**BODY, "prompt": "nan circle"}).json()["id"]
            good = client.post("/v1/videos", json=BODY).json()["id"]
            failed, done = wait_for(client, bad), wait_for(client, good)
            assert done["status"] == "completed" and done["batch_size"] == 2
            assert failed["status"] == "failed" and failed["error"]["code"] == "non_finite_output"
            assert f"step {NanWan.NAN_STEP} of 3" in failed["error"]["message"]
            assert not app.state.runtime.store.video_path(bad).exists()


def test_nrg_generate_exits_2_naming_the_step(tiny_dir, tmp_path, capsys, monkeypatch):
    load = generate._load
    monkeypatch.setattr(generate, "_load", lambda args: NanWan(load(args).pipe))
    out = tmp_path / "v.mp4"
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--model", str(tiny_dir("wan")), "--prompt", "nan circle", "--frames", "9",
              "--size", "32x32", "--steps", "3", "--quiet", "--out", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nrg: error: ") and err.count("\n") == 1
    assert f"step {NanWan.NAN_STEP} of 3" in err and not out.exists()
