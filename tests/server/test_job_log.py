"""One log line per job transition, from a live server: accepted, started, completed, cancelled."""

from __future__ import annotations

import logging

import httpx

from tests.server.conftest import running_server, wait_for


def test_each_transition_is_one_line_with_its_fields(hosted_wan, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nrg.jobs")
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, _app), httpx.Client(base_url=url) as client:
        guided = client.post("/v1/videos", json={"prompt": "a red circle", "seed": 1, "num_inference_steps": 2,
                                                 "reward_guidance": {"weights": {"ta": 1}}}).json()
        done = wait_for(client, guided["id"])
        queued = client.post("/v1/videos", json={"prompt": "x", "num_inference_steps": 400}).json()
        client.delete(f"/v1/videos/{queued['id']}")
        wait_for(client, queued["id"])
    records = {(r.job, r.event): r for r in caplog.records if r.name == "nrg.jobs"}
    accepted = records[(guided["id"], "queued")].getMessage()
    assert accepted == (f"job {guided['id']} accepted: model tiny-wan, 32x32x9, 2 steps, seed 1, "
                        f"guided ta=1 ({done['reward_guidance']['mode']}, strength "
                        f"{done['reward_guidance']['strength']:g})")
    assert records[(guided["id"], "started")].getMessage() == f"job {guided['id']} started in a batch of 1"
    completed = records[(guided["id"], "completed")]
    assert completed.getMessage().startswith(f"job {guided['id']} completed in ")
    assert f"ta={done['rewards']['ta']:.4f}" in completed.getMessage()
    assert completed.rewards == done["rewards"] and completed.batch_size == 1
    assert records[(queued["id"], "cancelled")].getMessage() == f"job {queued['id']} cancelled"


def test_a_failure_is_a_warning_saying_why(caplog):
    from server.job_log import JobLog

    caplog.set_level(logging.INFO, logger="nrg.jobs")
    JobLog(store=None)("video_9", "failed", {"error": {"code": "out_of_memory", "message": "CUDA out of memory"}})
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "job video_9 failed (out_of_memory): CUDA out of memory"
