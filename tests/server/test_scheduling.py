"""The engine's batching policy: oldest job first, batch-mates by key, no key starves."""

import httpx

from server.hosted_model import HostedModel
from tests.server.conftest import HANG_S, running_server, wait_for
from tests.server.faults import HeldStepWan

A = {"prompt": "a red circle", "num_inference_steps": 2, "num_frames": 9}
B = {**A, "num_frames": 5}  # another shape: another batch key


def test_oldest_job_first_and_batches_by_key(hosted_wan, tmp_path):
    family = HeldStepWan(hosted_wan.family.pipe)
    held = HostedModel("held", family, None, None, hosted_wan.default_shape, 2)
    with running_server(tmp_path, {"held": held}, max_batch=3, batch_wait_ms=0) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            blocker = client.post("/v1/videos", json={**A, "num_inference_steps": 100}).json()["id"]
            # The blocker is held in its first step until all the others are queued: how many steps it
            # has left when they arrive is then no race against the machine's speed.
            assert family.stepping.wait(HANG_S), "the blocker never started"
            # Queued behind the blocker, in this order: B first, then three A jobs.
            b = client.post("/v1/videos", json=B).json()["id"]
            a_jobs = [client.post("/v1/videos", json={**A, "seed": i}).json()["id"] for i in range(3)]
            family.release.set()
            done = {i: wait_for(client, i) for i in [blocker, b, *a_jobs]}
            store = app.state.runtime.store
            started = {i: store.get(i).started_at for i in done}
    # B is the oldest queued job when the blocker ends, so it runs next although more A jobs wait.
    assert started[b] < min(started[i] for i in a_jobs)
    assert done[b]["batch_size"] == 1
    # The three A jobs share a key and run together.
    assert [done[i]["batch_size"] for i in a_jobs] == [3, 3, 3]
    assert max(started[i] for i in a_jobs) - min(started[i] for i in a_jobs) < 0.5
