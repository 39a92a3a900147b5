"""Cancelling or deleting a job in the window after its last denoising step: the job alone leaves,
with no files, its batch-mates complete undisturbed in their batch, and the engine forgets the ids."""

from __future__ import annotations

import httpx

from server.hosted_model import HostedModel
from tests.server.conftest import HANG_S, running_server, until, wait_for
from tests.server.faults import HeldDecodeWan

BODY = {"prompt": "a red circle", "num_inference_steps": 2}


def test_delete_and_cancel_after_the_last_step_leave_no_files_and_spare_the_batch(hosted_wan, tmp_path):
    family = HeldDecodeWan(hosted_wan.family.pipe)
    held = HostedModel("held", family, None, None, hosted_wan.default_shape, 2)
    with running_server(tmp_path, {"held": held}, max_batch=3,
                        batch_wait_ms=HANG_S * 1000) as (url, app):  # starts once all three are queued
        store, engine = app.state.runtime.store, app.state.runtime.engine
        with httpx.Client(base_url=url, timeout=60) as client:
            deleted, cancelled, mate = (client.post("/v1/videos", json={**BODY, "seed": i}).json()["id"]
                                        for i in range(3))
            assert family.decoding.wait(HANG_S), "the batch never reached its decode"
            # The last step is done: cancel one job, and cancel then delete another.
            assert client.delete(f"/v1/videos/{cancelled}").json()["status"] == "cancelled"
            assert client.delete(f"/v1/videos/{deleted}").json()["status"] == "cancelled"
            assert client.delete(f"/v1/videos/{deleted}").json()["deleted"] is True
            # A job queued meanwhile and cancelled before it ever starts.
            queued = client.post("/v1/videos", json=BODY).json()["id"]
            assert client.delete(f"/v1/videos/{queued}").json()["status"] == "cancelled"
            family.release.set()
            done = wait_for(client, mate)
            assert done["status"] == "completed" and done["batch_size"] == 3
            assert store.get(mate).attempts == 1  # never re-run one by one
            assert client.get(f"/v1/videos/{deleted}").status_code == 404
            assert client.get(f"/v1/videos/{cancelled}").json()["status"] == "cancelled"
            until(lambda: not engine.busy, "the engine idle")
            assert engine.alive
            assert engine.cancels.take([mate, deleted, cancelled, queued]) == set()  # no request stays behind
    for job_id in (deleted, cancelled, queued):
        assert not store.video_path(job_id).exists() and not store.thumbnail_path(job_id).exists()
    assert store.video_path(mate).exists() and store.thumbnail_path(mate).exists()
