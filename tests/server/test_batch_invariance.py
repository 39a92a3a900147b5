"""``nrg serve --batch-invariant``: a job's video, as a user downloads it, is the same alone or in a
batch of four with other modes, because every row gets its own call to every model."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from guidance.families.base import VideoShape
from tests.server.conftest import decoded, full_batches_only, running_server, wait_for

SMALL = {"size": "32x32", "num_frames": 9, "num_inference_steps": 4}
BODIES = [
    {**SMALL, "prompt": "a red circle moving right", "seed": 31, "reward_guidance": {"weights": {"vq": 1.0},
                                                                                       "strength": 30}},
    {**SMALL, "prompt": "a blue square moving up", "seed": 32, "guidance_scale": 2.0},
    {**SMALL, "prompt": "a green triangle", "seed": 33,
     "reward_guidance": {"weights": {"ta": 1.0}, "mode": "best_of_n", "particles": 2, "window": [0, 1]}},
    {**SMALL, "prompt": "a yellow circle", "seed": 34, "reward_guidance": {"weights": {"mq": 1.0}, "mode": "sum"}},
]


@pytest.fixture(scope="module")
def invariant(tiny_dir, tmp_path_factory):
    """A server on a pipeline of its own: the session's shared ``hosted_wan`` may still be stepped by the
    engine thread of another module's server while it shuts down, and a bit-for-bit comparison must see
    only this server's work on its model."""
    from guidance.families import load_pipeline
    from guidance.reward_model import init_reward_model
    from server.hosted_model import HostedModel

    family = load_pipeline(tiny_dir("wan"))
    reward = init_reward_model(family, ["vq", "mq", "ta"], num_blocks=1, seed=0)
    hosted = HostedModel("tiny-wan", family, reward, None, VideoShape(32, 32, 9), 4)
    with running_server(tmp_path_factory.mktemp("invariant"), {"tiny-wan": hosted}, max_batch=5,
                        batch_invariant=True) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, app


def test_a_served_video_is_the_same_alone_and_in_a_batch_of_four(invariant):
    client, app = invariant
    with full_batches_only(app):  # the four jobs (five rows: two particles) start together once all are queued
        together = [wait_for(client, i) for i in [client.post("/v1/videos", json=b).json()["id"] for b in BODIES]]
    assert all(job["status"] == "completed" for job in together)
    assert [job["batch_size"] for job in together][0] >= 4
    for body, job in zip(BODIES, together):
        alone = wait_for(client, client.post("/v1/videos", json=body).json()["id"])
        assert alone["batch_size"] == 1 and alone["rewards"] == job["rewards"]
        a = client.get(f"/v1/videos/{alone['id']}/content").content
        b = client.get(f"/v1/videos/{job['id']}/content").content
        # Decoded, as a user sees them: bit for bit, under load too (the encoder runs on one thread).
        assert np.array_equal(decoded(a), decoded(b)), body["prompt"]
