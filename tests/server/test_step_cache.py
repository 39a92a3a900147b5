"""``--step-cache`` through the API: a hosted Wan model with a step cache runs every job's rows with the
server's threshold, and each job reports how many of its denoiser calls the cache skipped."""

from __future__ import annotations

import httpx

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.step_cache import StepCache
from server.hosted_model import HostedModel
from tests.server.conftest import running_server, wait_for

REQUEST = {"model": "wan", "prompt": "a red circle moving left", "size": "32x32", "num_frames": 5,
           "num_inference_steps": 8, "seed": 3}


def test_a_cached_servers_jobs_report_their_skipped_calls_and_an_uncached_ones_none(tiny_dir, tmp_path):
    family = load_pipeline(tiny_dir("wan"))  # its own copy: the cache hooks its blocks
    cached = HostedModel("wan", family, None, None, VideoShape(32, 32, 5), 8, step_cache=StepCache(family, 0.3))
    plain = HostedModel("wan", family, None, None, VideoShape(32, 32, 5), 8)
    counts = []
    try:
        for name, model in (("cached", cached), ("plain", plain)):
            with running_server(tmp_path / name, {"wan": model}) as (url, _), \
                    httpx.Client(base_url=url, timeout=120) as client:
                jobs = [client.post("/v1/videos", json={**REQUEST, "seed": seed}).json()["id"] for seed in (3, 4)]
                done = [wait_for(client, job) for job in jobs]
                assert all(job["status"] == "completed" for job in done), done
                counts.append([job["cached_denoiser_calls"] for job in done])
    finally:
        cached.step_cache.remove()
    assert all(0 < count <= 2 * (REQUEST["num_inference_steps"] - 1) for count in counts[0]), counts
    assert counts[1] == [0, 0]
