"""The real ``nrg serve`` process: kill -9 mid-job (or mid-webhook) and restart, and graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager

import httpx
import pytest

from nrg_client import verify_webhook
from tests.server.conftest import HANG_S, free_port, until, wait_for
from tests.server.webhook_receiver import Receiver

# Each test starts real server processes (about 10 s of imports each on a small machine).
pytestmark = pytest.mark.slow

GUIDED = {"prompt": "a blue circle moving up", "seed": 77, "size": "32x32", "num_frames": 9,
          "reward_guidance": {"weights": {"ta": 1.0}, "strength": 10}}


@pytest.fixture(scope="module")
def reward_dir(tiny_dir, tmp_path_factory):
    from server.cli import main

    out = tmp_path_factory.mktemp("restart-reward")
    main(["init-reward", "--model", str(tiny_dir("wan")), "--objectives", "vq,ta", "--blocks", "1", str(out)])
    return out


@contextmanager
def serve(model_dir, reward_dir, data_dir, port, *extra):
    """The server as a child process (``extra``: more ``nrg serve`` flags). Its log goes to a file, never to an unread pipe: a full pipe
    would block the server on its next log line (every polled GET writes one)."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--model", f"tiny={model_dir}", "--reward", str(reward_dir),
           "--data-dir", str(data_dir), "--port", str(port), "--max-steps", "1000", *extra]
    log = data_dir.parent / f"server-{time.monotonic_ns()}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ})
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_S
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield proc, httpx.Client(base_url=url, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _first_step_event(client, video_id) -> None:
    """Block until the job reports its first denoising step (an event, not a clock)."""
    with client.stream("GET", f"/v1/videos/{video_id}/events") as response:
        for line in response.iter_lines():
            if line == "event: step":
                return
            assert not line.startswith(("event: completed", "event: failed", "event: cancelled")), line
    raise AssertionError(f"{video_id}: the event stream ended before any step")


def _status_in_store(data_dir, video_id) -> str:
    """The job's status as the server last committed it, read straight from its SQLite file."""
    with closing(sqlite3.connect(f"file:{data_dir / 'jobs.sqlite3'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT status FROM jobs WHERE id = ?", (video_id,)).fetchone()[0]


def test_kill_9_then_restart_loses_nothing(tiny_dir, reward_dir, tmp_path):
    data, port = tmp_path / "data", free_port()
    with serve(tiny_dir("wan"), reward_dir, data, port) as (proc, client):
        finished = wait_for(client, client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 3}).json()["id"])
        assert finished["status"] == "completed"
        video = client.get(f"/v1/videos/{finished['id']}/content").content
        running = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 40}).json()
        _first_step_event(client, running["id"])
        queued = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 5, "num_frames": 5}).json()
        # Freeze the server before the kill, so that "killed mid-job" is a fact read from the store,
        # not a race against a clock: however loaded the machine, the job has started and not ended.
        proc.send_signal(signal.SIGSTOP)
        statuses = [_status_in_store(data, job["id"]) for job in (running, queued)]
        assert statuses == ["in_progress", "queued"], f"{statuses} when frozen; give the running job more steps"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    with serve(tiny_dir("wan"), reward_dir, data, port) as (proc, client):
        assert client.get(f"/v1/videos/{finished['id']}/content").content == video
        redone = wait_for(client, running["id"], timeout=600)
        assert redone["status"] == "completed" and redone["seed"] == running["seed"] == 77
        assert wait_for(client, queued["id"], timeout=600)["status"] == "completed"
        # Same seed, same result: a fresh identical job gives the same final rewards.
        again = wait_for(client, client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 40}).json()["id"],
                         timeout=600)
        for name, value in again["rewards"].items():
            assert redone["rewards"][name] == pytest.approx(value, abs=1e-5)


def test_sigterm_finishes_the_running_job_and_exits(tiny_dir, reward_dir, tmp_path):
    data, port = tmp_path / "data", free_port()
    # A grace far beyond what 40 tiny steps take on any machine: the test waits for the job's end, not a clock.
    with serve(tiny_dir("wan"), reward_dir, data, port, "--shutdown-grace", "600") as (proc, client):
        # Running at the signal (it has reported a step).
        job = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 40}).json()
        _first_step_event(client, job["id"])
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.
        assert proc.wait(600) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in proc.log.read_text()
    with serve(tiny_dir("wan"), reward_dir, data, port) as (proc, client):
        # Finished during the shutdown grace, not re-queued: completed as soon as the server is back.
        assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "completed"


def _wait_draining(client) -> None:
    """Block until the server has taken the signal (its /health says so), bounded by a safety timeout."""
    deadline = time.monotonic() + HANG_S
    while client.get("/health").json()["status"] != "draining":
        assert time.monotonic() < deadline, "the server never started draining"
        time.sleep(0.05)


def test_sigterm_drains_answering_503_and_keeps_queued_jobs(tiny_dir, reward_dir, tmp_path):
    data, port = tmp_path / "data", free_port()
    with serve(tiny_dir("wan"), reward_dir, data, port, "--shutdown-grace", "600") as (proc, client):
        # Far more steps than the probes below take; the test ends the job itself, by cancelling it.
        running = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 1000}).json()
        _first_step_event(client, running["id"])
        queued = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 3, "num_frames": 5}).json()
        proc.send_signal(signal.SIGTERM)
        _wait_draining(client)
        # The listener stays open while draining: probes get answers, not connection errors.
        ready = client.get("/ready")
        assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
        refused = client.post("/v1/videos", json=GUIDED)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["code"] == "unavailable"
        assert client.get(f"/v1/videos/{running['id']}").json()["status"] == "in_progress"
        assert proc.poll() is None
        # The running batch ends (here: cancelled), so the drain ends and the process exits cleanly.
        client.delete(f"/v1/videos/{running['id']}")
        assert proc.wait(HANG_S) == 0
    assert _status_in_store(data, queued["id"]) == "queued"
    with serve(tiny_dir("wan"), reward_dir, data, port) as (proc, client):
        assert wait_for(client, queued["id"], timeout=600)["status"] == "completed"
        assert client.get(f"/v1/videos/{running['id']}").json()["status"] == "cancelled"


def test_sigterm_grace_elapsed_leaves_the_running_job_for_the_next_start(tiny_dir, reward_dir, tmp_path):
    data, port = tmp_path / "data", free_port()
    with serve(tiny_dir("wan"), reward_dir, data, port, "--shutdown-grace", "0") as (proc, client):
        running = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 1000}).json()
        _first_step_event(client, running["id"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG_S) == 0
    assert _status_in_store(data, running["id"]) == "in_progress"
    with serve(tiny_dir("wan"), reward_dir, data, port) as (proc, client):
        # Re-queued at start and running again (not failed, not lost); no need to watch it finish.
        assert client.get(f"/v1/videos/{running['id']}").json()["status"] in ("queued", "in_progress")
        client.delete(f"/v1/videos/{running['id']}")


def _webhook_in_store(data_dir, video_id) -> tuple[str, str, int]:
    with closing(sqlite3.connect(f"file:{data_dir / 'jobs.sqlite3'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT status, webhook_status, webhook_attempts FROM jobs WHERE id = ?",
                          (video_id,)).fetchone()


def test_kill_9_then_restart_still_delivers_the_pending_webhook(tiny_dir, reward_dir, tmp_path):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    hooks = ("--webhook-allow", "http://127.0.0.1:*", "--webhook-secret", secret, "--webhook-backoff", "0,0,0,0,0")
    data, port = tmp_path / "data", free_port()
    # The first attempt gets a 503; the second is held, unanswered, until the server is dead: whatever
    # delivers it afterwards read it from the store.
    with Receiver(lambda request, nth: 503 if nth == 1 else None) as receiver:
        with serve(tiny_dir("wan"), reward_dir, data, port, *hooks, "--webhook-timeout", "600") as (proc, client):
            job = client.post("/v1/videos", json={**GUIDED, "num_inference_steps": 2,
                                                  "webhook_url": f"{receiver.url}/hook"}).json()
            assert receiver.holding.wait(HANG_S), "the second attempt never came"
            proc.send_signal(signal.SIGSTOP)
            assert _webhook_in_store(data, job["id"]) == ("completed", "pending", 2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        receiver.answer = lambda request, nth: 204
        receiver.release()
        with serve(tiny_dir("wan"), reward_dir, data, port, *hooks) as (proc, client):
            def delivered():
                status = client.get(f"/v1/videos/{job['id']}").json()["webhook_status"]
                return status if status["status"] == "delivered" else None
            assert until(delivered, "the webhook delivered after the restart")["attempts"] == 3
        attempts = receiver.to("/hook")
    assert len(attempts) == 3 and len({a.headers["webhook-id"] for a in attempts}) == 1
    event = verify_webhook(attempts[-1].body, attempts[-1].headers, secret)
    assert event["type"] == "video.completed" and event["data"]["id"] == job["id"]
