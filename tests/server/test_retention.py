"""Retention: finished jobs report ``expires_at``; expired content is 410, then the sweep deletes the
job's row and files (404)."""

from __future__ import annotations

import time

import httpx
import pytest

from server.retention import DAY_S, Retention
from server.store import COMPLETED, FAILED, LOCAL_WORKER
from server.store.sqlite import JobStore
from tests.server.conftest import running_server, until, wait_for
from tests.server.job_specs import SPEC

SMALL = {"prompt": "a red circle moving left", "num_inference_steps": 1, "seed": 1}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _finished(store: JobStore, status: str = COMPLETED) -> str:
    job = store.create(SPEC)
    store.claim([job.id], LOCAL_WORKER)
    store.finish(job.id, status, result={})
    store.video_path(job.id).write_bytes(b"mp4")
    store.thumbnail_path(job.id).write_bytes(b"webp")
    return job.id


def test_sweep_deletes_only_jobs_finished_longer_ago_than_the_retention(tmp_path, monkeypatch):
    store, clock = JobStore(tmp_path), Clock()
    monkeypatch.setattr(time, "time", clock)  # the store stamps completed_at with the same clock
    retention = Retention(store, days=2, clock=clock)
    old, failed = _finished(store), _finished(store, FAILED)
    running = store.create(SPEC).id
    clock.now += 2 * DAY_S - 1
    assert retention.sweep() == [] and not retention.expired(store.get(old))
    new = _finished(store)
    clock.now += 2
    assert retention.expired(store.get(old))
    assert set(retention.sweep()) == {old, failed}
    assert store.get(old) is None and store.get(failed) is None
    assert not store.video_path(old).exists() and not store.thumbnail_path(old).exists()
    assert store.get(new) is not None and store.video_path(new).exists() and store.get(running) is not None
    assert retention.expires_at(store.get(running)) is None
    store.close()


def test_retention_zero_keeps_everything(tmp_path):
    store, clock = JobStore(tmp_path), Clock()
    retention = Retention(store, days=0, clock=clock)
    job_id = _finished(store)
    clock.now += 10_000 * DAY_S
    assert retention.expires_at(store.get(job_id)) is None and retention.sweep() == []
    assert store.get(job_id) is not None
    store.close()


def test_negative_retention_is_refused(tmp_path):
    with pytest.raises(ValueError, match="retention must be >= 0"):
        Retention(JobStore(tmp_path), days=-1)


@pytest.mark.parametrize("days", [7.0, 0.0])
def test_video_objects_report_expires_at(hosted_wan, tmp_path, days):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, retention_days=days) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            job = client.post("/v1/videos", json=SMALL).json()
            assert job["expires_at"] is None  # not finished yet
            done = wait_for(client, job["id"])
    if days:
        assert abs(done["expires_at"] - (done["completed_at"] + 7 * 86400)) <= 1
    else:
        assert done["expires_at"] is None


def test_expired_content_is_410_then_the_sweep_makes_it_404(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, retention_days=1) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            done = wait_for(client, client.post("/v1/videos", json=SMALL).json()["id"])
            assert client.get(f"/v1/videos/{done['id']}/content").status_code == 200
            retention = app.state.runtime.retention
            retention.clock = lambda: time.time() + 2 * DAY_S
            response = client.get(f"/v1/videos/{done['id']}/content")
            assert response.status_code == 410
            assert response.json()["error"]["code"] == "video_expired"
            assert retention.sweep() == [done["id"]]
            assert client.get(f"/v1/videos/{done['id']}").status_code == 404
            assert client.get(f"/v1/videos/{done['id']}/content").status_code == 404
            assert not app.state.runtime.store.video_path(done["id"]).exists()


def test_the_background_sweeper_deletes_expired_jobs(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, retention_days=0.5 / DAY_S) as (url, app):
        retention = app.state.runtime.retention
        # The sweeper runs every 0.05 s; its clock is held an hour back until the test has seen the job
        # complete, or a slow poll could find it already swept (404) instead of completed.
        retention.clock = lambda: time.time() - 3600
        with httpx.Client(base_url=url, timeout=60) as client:
            done = wait_for(client, client.post("/v1/videos", json=SMALL).json()["id"])
            assert done["status"] == "completed" and app.state.runtime.store.video_path(done["id"]).exists()
            retention.clock = time.time  # now it has expired, and the background sweep deletes it
            until(lambda: client.get(f"/v1/videos/{done['id']}").status_code == 404,
                  "the expired job deleted by the sweeper")
            assert not app.state.runtime.store.video_path(done["id"]).exists()
