"""Scale-out with real processes on loopback: two API front ends and two workers over one PostgreSQL.

Every process is ``python -m server.cli serve --role api|worker --store postgresql://...`` on the tiny
Wan pipeline, sharing one ``--data-dir``; the workers hold 5 s leases. The cluster sees each worker's
metrics, a PostgreSQL restart mid-batch and a ``kill -9`` (last: it leaves one worker). The hand-back
of a stopped worker's batch runs in this process instead (two servers one after the other on their own
database), which spares the suite another process start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.server.conftest import HANG_S, decoded, free_port, running_server, until, wait_for
from tests.server.postgres import pg_server, pg_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

GUIDED = {"prompt": "a blue circle moving up", "seed": 77, "size": "32x32", "num_frames": 9,
          "num_inference_steps": 30, "reward_guidance": {"weights": {"ta": 1.0}, "strength": 10}}
#: Short, so that a killed worker's jobs move on soon; long beside the 0.5 s heartbeat, so that a
#: live worker's lease does not run out while a busy machine leaves its heartbeat thread unscheduled.
LEASE_S = 5


class Cluster:
    def __init__(self, url, data_dir, model_dir, reward_dir):
        self.url, self.data_dir = url, data_dir
        self.base = [sys.executable, "-m", "server.cli", "serve", "--model", f"tiny={model_dir}", "--reward",
                     str(reward_dir), "--data-dir", str(data_dir), "--store", url, "--max-steps", "1000"]
        self.procs: dict[str, subprocess.Popen] = {}
        self.clients: dict[str, httpx.Client] = {}

    def start(self, name: str, *flags: str) -> None:
        port = free_port()
        log = self.data_dir.parent / f"{name}.log"
        with open(log, "wb") as sink:  # a file, never an unread pipe that would block the server
            proc = subprocess.Popen([*self.base, "--port", str(port), *flags], stdout=sink, stderr=subprocess.STDOUT,
                                    env={**os.environ})
        proc.log = log
        self.procs[name] = proc
        self.clients[name] = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def wait_ready(self, timeout: float = HANG_S) -> None:
        deadline = time.monotonic() + timeout
        for name, client in self.clients.items():
            while True:
                try:
                    if client.get("/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                proc = self.procs[name]
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {proc.log.read_text()[-3000:]}")
                time.sleep(0.2)

    def log(self, name: str) -> str:
        return self.procs[name].log.read_text()

    def rows(self, *ids: str) -> dict[str, dict]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            rows = conn.execute("SELECT id, status, worker, attempts, progress FROM jobs WHERE id = ANY(%s)",
                                (list(ids),))
            return {r["id"]: r for r in rows}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        for client in self.clients.values():
            client.close()


@pytest.fixture(scope="module")
def cluster(pg_server, tiny_dir, tmp_path_factory):  # noqa: F811
    import psycopg

    from server.cli import main

    root = tmp_path_factory.mktemp("scale-out")
    reward_dir = root / "reward"
    main(["init-reward", "--model", str(tiny_dir("wan")), "--objectives", "vq,ta", "--blocks", "1", str(reward_dir)])
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE scale_out")
    cluster = Cluster(pg_server.url("scale_out"), root / "data", tiny_dir("wan"), reward_dir)
    for name in ("w1", "w2"):
        cluster.start(name, "--role", "worker", "--worker-id", name, "--lease-s", str(LEASE_S), "--max-batch", "2",
                      "--batch-wait-ms", "300")
    for name in ("api1", "api2"):
        cluster.start(name, "--role", "api")
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def _events(client: httpx.Client, video_id: str, on_step=None) -> list[tuple[str, dict]]:
    """Every SSE event of a job, to its terminal one; ``on_step(data)`` is called at each step."""
    events, kind = [], None
    with client.stream("GET", f"/v1/videos/{video_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                events.append((kind, data))
                if kind == "step" and on_step is not None:
                    on_step(data)
                if kind in ("completed", "failed", "cancelled"):
                    return events
    raise AssertionError(f"{video_id}: the stream ended without an outcome: {events}")


def test_jobs_submitted_to_either_api_complete_exactly_once(cluster):
    api1, api2 = cluster.clients["api1"], cluster.clients["api2"]
    assert cluster.clients["w1"].get("/v1/videos").status_code == 404  # workers take no jobs over HTTP
    assert 'nrg_worker_info{role="worker",worker="w1"} 1.0' in cluster.clients["w1"].get("/metrics").text
    ids = [(api1 if i % 2 else api2).post("/v1/videos", json={**GUIDED, "seed": i, "num_inference_steps": 3})
           .json()["id"] for i in range(4)]
    for i, video_id in enumerate(ids):
        assert wait_for(api1 if i % 2 == 0 else api2, video_id)["status"] == "completed"
    rows = cluster.rows(*ids)
    assert {r["status"] for r in rows.values()} == {"completed"} and {r["attempts"] for r in rows.values()} == {1}
    logs = cluster.log("w1") + cluster.log("w2")
    assert all(logs.count(f"job {video_id} completed") == 1 for video_id in ids)
    # The front end serving /content need not be the worker that wrote it: both read the shared dir.
    contents = {client.get(f"/v1/videos/{ids[0]}/content").content for client in (api1, api2)}
    assert len(contents) == 1 and len(next(iter(contents))) > 0


def test_sse_on_the_other_api_sees_every_step(cluster):
    video = cluster.clients["api1"].post("/v1/videos", json={**GUIDED, "num_inference_steps": 6}).json()
    events = _events(cluster.clients["api2"], video["id"])
    assert [d["step"] for k, d in events if k == "step"] == [1, 2, 3, 4, 5, 6]
    assert events[-1][0] == "completed" and events[-1][1]["rewards"].keys() == {"vq", "ta"}
    assert "started" in [k for k, _ in events]


def test_cancel_on_the_other_api_stops_the_job(cluster):
    api1, api2 = cluster.clients["api1"], cluster.clients["api2"]
    video = api1.post("/v1/videos", json={**GUIDED, "num_inference_steps": 1000}).json()
    cancelled: list[dict] = []

    def cancel_once(step):
        if not cancelled:
            cancelled.append(api2.delete(f"/v1/videos/{video['id']}").json())

    events = _events(api1, video["id"], on_step=cancel_once)
    assert cancelled[0]["status"] == "cancelled" and events[-1][0] == "cancelled"
    holder = cluster.rows(video["id"])[video["id"]]["worker"]
    # Its heartbeat sees the cancellation and stops it.
    until(lambda: f"job {video['id']} was cancelled" in cluster.log(holder), f"{holder} stopped {video['id']}")
    assert not (cluster.data_dir / "videos" / f"{video['id']}.mp4").exists()


def test_each_worker_labels_its_batch_step_and_reward_metrics(cluster):
    api1 = cluster.clients["api1"]
    video_id = api1.post("/v1/videos", json={**GUIDED, "num_inference_steps": 3}).json()["id"]
    assert wait_for(api1, video_id)["status"] == "completed"
    holder = cluster.rows(video_id)[video_id]["worker"]
    text = cluster.clients[holder].get("/metrics").text
    steps = re.search(rf'^nrg_step_seconds_count{{worker="{holder}"}} (\S+)$', text, re.M)
    assert steps and float(steps[1]) >= 3, text
    assert re.search(rf'^nrg_batch_size_count{{worker="{holder}"}} [1-9]', text, re.M)
    assert f'nrg_final_reward_count{{objective="ta",worker="{holder}"}}' in text
    assert "nrg_queue_depth " in cluster.clients["api2"].get("/metrics").text  # from the store, on any front end


def _completions(cluster, video_id: str) -> dict[str, int]:
    """How many times each worker recorded the job as completed (its log line follows the row's write)."""
    return {name: cluster.log(name).count(f"job {video_id} completed") for name in ("w1", "w2")}


def test_postgresql_restart_mid_run_loses_no_job_and_completes_none_twice(cluster, pg_server):  # noqa: F811
    api1, api2 = cluster.clients["api1"], cluster.clients["api2"]
    ids = [(api1, api2)[i % 2].post("/v1/videos", json={**GUIDED, "seed": 200 + i, "num_inference_steps": 100})
           .json()["id"] for i in range(4)]
    # Both workers mid-batch (each has written progress), so neither touches the store but to report.
    until(lambda: all(r["status"] == "in_progress" and r["progress"] > 0 for r in cluster.rows(*ids).values()),
          "all four jobs mid-run")
    # Down for longer than a lease: every heartbeat fails meanwhile and the leases run out.
    pg_server.restart(down_s=LEASE_S + 0.5)
    for i, video_id in enumerate(ids):
        job = wait_for((api2, api1)[i % 2], video_id)
        assert job["status"] == "completed", job
        assert (cluster.data_dir / "videos" / f"{video_id}.mp4").stat().st_size > 0
    rows = cluster.rows(*ids)
    assert {r["status"] for r in rows.values()} == {"completed"}, rows
    for video_id, row in rows.items():  # recorded once, by the worker that held it
        assert _completions(cluster, video_id) == {w: int(w == row["worker"]) for w in ("w1", "w2")}, rows
    # Every lease ran out while PostgreSQL was down, yet no live worker's job was taken from it.
    logs = cluster.log("w1") + cluster.log("w2")
    assert not [i for i in ids if f"re-queued {i}: its worker's lease expired" in logs], rows
    for name in ("w1", "w2"):
        assert cluster.procs[name].poll() is None and cluster.clients[name].get("/health").status_code == 200
    # Both front ends answer again, and their LISTEN connections are back: SSE sees every step.
    for name in ("api1", "api2"):
        assert cluster.clients[name].get("/ready").status_code == 200, cluster.log(name)[-2000:]
        until(lambda: "listening for job events again" in cluster.log(name), f"{name} listening again")
    video = api1.post("/v1/videos", json={**GUIDED, "num_inference_steps": 4}).json()
    events = _events(api2, video["id"])
    assert [d["step"] for k, d in events if k == "step"] == [1, 2, 3, 4] and events[-1][0] == "completed"


def test_kill_9_of_a_worker_mid_batch_reruns_its_jobs_on_the_other(cluster):
    api1, api2 = cluster.clients["api1"], cluster.clients["api2"]
    reference = wait_for(api1, api1.post("/v1/videos", json=GUIDED).json()["id"])
    # One job, as the reference ran: alone in its batch both times, so the re-run must give the same
    # bytes (batch invariance holds only to ~1e-4 in float, which can move a rounded pixel).
    ids = [api2.post("/v1/videos", json=GUIDED).json()["id"]]

    def running() -> dict[str, dict] | None:
        rows = cluster.rows(*ids)
        return rows if all(r["status"] == "in_progress" for r in rows.values()) else None

    rows = until(running, "the job running")
    victim = rows[ids[0]]["worker"]
    survivor = "w2" if victim == "w1" else "w1"
    cluster.procs[victim].send_signal(signal.SIGKILL)
    cluster.procs[victim].wait(30)
    victims = [i for i in ids if rows[i]["worker"] == victim]
    for video_id in ids:
        job = wait_for(api2, video_id)
        assert job["status"] == "completed"
        # Same seed, same video: another process need not round every float as the first did (a BLAS
        # may pick its kernels by how its buffers happen to be aligned), and H.264 turns one level of a
        # pixel into a different file, so the check is on the decoded frames, with room for that. Another
        # seed's video differs by tens of levels.
        assert job["rewards"] == pytest.approx(reference["rewards"], abs=1e-4)
        rerun, first = (decoded(api1.get(f"/v1/videos/{i}/content").content) for i in (video_id, reference["id"]))
        assert rerun.shape == first.shape and abs(rerun.astype(int) - first).mean() < 1.0
    after = cluster.rows(*ids)
    assert all(after[i]["worker"] == survivor and after[i]["attempts"] == 2 for i in victims)
    assert f"re-queued {victims[0]}: its worker's lease expired" in cluster.log(survivor)


def test_a_worker_stopped_mid_batch_hands_its_jobs_back_at_once(hosted_wan, pg_url, tmp_path):  # noqa: F811
    """What SIGTERM does to a worker, in this process: the drain calls ``Engine.stop`` with the shutdown
    grace, and a batch still running when the grace is spent goes back to the queue then, so another
    worker runs it at once instead of after its lease. The lease outlasts the test, so w2 can only get
    the job by the hand-back: no clock decides the outcome."""
    models, shared = {"tiny-wan": hosted_wan}, {"store_url": pg_url, "lease_s": HANG_S * 10}
    unguided = {"prompt": "a red circle", "seed": 5, "size": "32x32", "num_frames": 9, "num_inference_steps": 80}
    with running_server(tmp_path, models, worker_id="w1", **shared) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            video_id = client.post("/v1/videos", json=unguided).json()["id"]
        store, engine = app.state.runtime.store, app.state.runtime.engine
        until(lambda: store.get(video_id).progress > 0, "the job mid-run", poll_s=0.02)
        assert not engine.stop(0.1)  # the grace ran out mid-batch
        handed_back = store.get(video_id)
        assert (handed_back.status, handed_back.worker) == ("queued", None)
        until(lambda: engine.finished, "the batch dropped at its next step", poll_s=0.02)
    with running_server(tmp_path, models, worker_id="w2", **shared) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert wait_for(client, video_id)["status"] == "completed"
        done = app.state.runtime.store.get(video_id)
        assert (done.worker, done.attempts) == ("w2", 2)
