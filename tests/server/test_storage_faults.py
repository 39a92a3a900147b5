"""SQLite write errors (disk full, I/O errors): retried, never fatal to a job or silently fatal to the
worker. A fault that persists is reported by /health and ends ``nrg serve`` with a non-zero status."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest

from server import serving
from server.app import create_app
from server.config import ServerConfig
from server.store import StoreUnavailable
from server.store.sqlite import JobStore
from tests.server.conftest import HANG_S, free_port, running_server, wait_for
from tests.server.faults import CLAIM, CREATE, FINISH, heal, inject
from tests.server.job_specs import SPEC

BODY = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 3}
#: No waits between the worker's retries; three retries before it gives up.
FAST_BACKOFF = (0.0, 0.0, 0.0)


def _poll(predicate, what: str, timeout: float = HANG_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_store_retries_a_transient_write_error_and_reports_a_persistent_one(tmp_path):
    store = JobStore(tmp_path)
    faulty = inject(store, CREATE, times=2)
    job = store.create(SPEC)  # two failures, then the third attempt succeeds
    assert faulty.raised == 2 and store.get(job.id) is not None and store.problem is None
    inject(store, CREATE)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        store.create(SPEC)
    assert "disk I/O error" in store.problem
    heal(store)
    store.create(SPEC)  # the next successful write clears the problem
    assert store.problem is None


def test_transient_faults_are_retried_and_the_job_completes(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, fault_backoff_s=FAST_BACKOFF) as (url, app):
        # Six failures: more than one store operation retries (four attempts), fewer than the worker's.
        faulty = inject(app.state.runtime.store, CLAIM, times=6)
        with httpx.Client(base_url=url, timeout=60) as client:
            job = wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])
            assert job["status"] == "completed" and faulty.raised == 6
            assert client.get("/health").json() == {"status": "ok"}
            assert client.get("/ready").status_code == 200
            assert app.state.runtime.engine.alive


def test_a_failed_final_write_leaves_the_job_rerunnable(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, fault_backoff_s=FAST_BACKOFF) as (url, app):
        store = app.state.runtime.store
        faulty = inject(store, FINISH, times=4)  # exactly one finish(), retries included
        with httpx.Client(base_url=url, timeout=60) as client:
            job = wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])
            assert job["status"] == "completed" and faulty.raised == 4
            assert store.get(job["id"]).attempts == 2  # re-run, not lost
            assert client.get(f"/v1/videos/{job['id']}/content").status_code == 200


def test_persistent_faults_fail_health_and_lose_no_accepted_job(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, fault_backoff_s=FAST_BACKOFF) as (url, app):
        inject(app.state.runtime.store, FINISH)  # disk full for good: no job can ever be recorded as done
        with httpx.Client(base_url=url, timeout=60) as client:
            accepted = client.post("/v1/videos", json=BODY).json()["id"]
            response = _poll(lambda: (r := client.get("/health")).status_code == 503 and r, "/health to fail")
            assert response.json()["status"] == "failed" and "disk I/O error" in response.json()["reason"]
            assert client.get("/ready").status_code == 503
            refused = client.post("/v1/videos", json=BODY)
            assert refused.status_code == 503 and "disk I/O error" in refused.json()["error"]["message"]
            assert refused.headers["retry-after"]
            assert client.get(f"/v1/videos/{accepted}").json()["status"] in ("queued", "in_progress")
    # The next process (the supervisor's restart) runs it.
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert wait_for(client, accepted)["status"] == "completed"


def test_create_during_a_write_fault_is_503_then_recovers(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
        inject(app.state.runtime.store, CREATE, times=4)
        with httpx.Client(base_url=url, timeout=60) as client:
            response = client.post("/v1/videos", json=BODY)
            assert response.status_code == 503 and response.headers["retry-after"]
            error = response.json()["error"]
            assert error["code"] == "store_unavailable" and "disk I/O error" in error["message"]
            assert client.get("/ready").status_code == 503  # the store cannot take writes
            assert client.get("/health").status_code == 200  # but nothing is broken for good
            heal(app.state.runtime.store)
            inject(app.state.runtime.store, "SELECT COUNT")
            scrape = client.get("/metrics")  # the outage costs the queue depth, not the scrape
            heal(app.state.runtime.store)
            assert scrape.status_code == 200
            assert "nrg_store_up 0.0" in scrape.text and "nrg_queue_depth NaN" in scrape.text
            assert "nrg_store_up 1.0" in client.get("/metrics").text
            job = client.post("/v1/videos", json=BODY)
            assert job.status_code == 200 and client.get("/ready").status_code == 200
            assert wait_for(client, job.json()["id"])["status"] == "completed"


def test_nrg_serve_exits_non_zero_when_the_worker_gives_up(hosted_wan, tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", port=free_port(), fault_backoff_s=FAST_BACKOFF)
    app = create_app(config, {"tiny-wan": hosted_wan})
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(serving.run(app, "127.0.0.1", config.port)), daemon=True)
    runner.start()
    url = f"http://127.0.0.1:{config.port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    _poll(ready, "the server to start")
    inject(app.state.runtime.store, CLAIM)
    assert httpx.post(f"{url}/v1/videos", json=BODY, timeout=60).status_code == 200
    runner.join(HANG_S)
    assert status == [1]
    with sqlite3.connect(config.data_dir / "jobs.sqlite3") as db:
        assert db.execute("SELECT status FROM jobs").fetchall() == [("queued",)]


def test_health_answers_503_while_the_failed_server_drains_before_it_exits(hosted_wan, tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", port=free_port(), fault_backoff_s=FAST_BACKOFF)
    app = create_app(config, {"tiny-wan": hosted_wan})
    # The linger is held open until the test ends it, as a second signal does, so nothing races a clock.
    app.state.runtime.lifecycle.failed_linger_s = 3600.0
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(serving.run(app, "127.0.0.1", config.port)), daemon=True)
    runner.start()
    url = f"http://127.0.0.1:{config.port}"

    def answer(path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{url}{path}", timeout=5)
        except httpx.TransportError:
            return None

    _poll(lambda: (r := answer("/ready")) is not None and r.status_code == 200, "the server to start")
    inject(app.state.runtime.store, CLAIM)
    assert httpx.post(f"{url}/v1/videos", json=BODY, timeout=60).status_code == 200
    health = _poll(lambda: (r := answer("/health")) is not None and r.status_code == 503 and r, "/health 503")
    assert health.json()["status"] == "failed" and "storage fault persists" in health.json()["reason"]
    assert answer("/ready").status_code == 503
    assert httpx.post(f"{url}/v1/videos", json=BODY, timeout=60).status_code == 503
    assert runner.is_alive() and status == []
    app.state.runtime.lifecycle.end_grace()
    runner.join(120)
    assert status == [1]
