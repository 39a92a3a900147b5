"""The engine's batching policy: oldest job first, batch-mates by key, no key starves."""

import httpx

from tests.server.conftest import running_server, wait_for

A = {"prompt": "a red circle", "num_inference_steps": 2, "num_frames": 9}
B = {**A, "num_frames": 5}  # another shape: another batch key


def test_oldest_job_first_and_batches_by_key(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, max_batch=3, batch_wait_ms=0) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            blocker = client.post("/v1/videos", json={**A, "num_inference_steps": 100}).json()["id"]
            wait_for(client, blocker, statuses=("in_progress",))
            # Queued behind the blocker, in this order: B first, then three A jobs.
            b = client.post("/v1/videos", json=B).json()["id"]
            a_jobs = [client.post("/v1/videos", json={**A, "seed": i}).json()["id"] for i in range(3)]
            done = {i: wait_for(client, i) for i in [blocker, b, *a_jobs]}
            store = app.state.store
            started = {i: store.get(i).started_at for i in done}
    # B is the oldest queued job when the blocker ends, so it runs next although more A jobs wait.
    assert started[b] < min(started[i] for i in a_jobs)
    assert done[b]["batch_size"] == 1
    # The three A jobs share a key and run together.
    assert [done[i]["batch_size"] for i in a_jobs] == [3, 3, 3]
    assert max(started[i] for i in a_jobs) - min(started[i] for i in a_jobs) < 0.5
