"""``--step-cache`` through the API: a hosted Wan model with a step cache runs every job's rows with the
server's threshold or the request's own (``step_cache_threshold``), a model without one refuses a threshold
above 0, and each job reports its threshold and how many of its denoiser calls the cache skipped."""

from __future__ import annotations

import httpx

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.step_cache import StepCache
from server.hosted_model import HostedModel
from tests.server.conftest import running_server, wait_for

REQUEST = {"model": "wan", "prompt": "a red circle moving left", "size": "32x32", "num_frames": 5,
           "num_inference_steps": 8, "seed": 3}


def _finished(client: httpx.Client, asked: list[dict]) -> list[dict]:
    jobs = [client.post("/v1/videos", json={**REQUEST, **fields}).json()["id"] for fields in asked]
    done = [wait_for(client, job) for job in jobs]
    assert all(job["status"] == "completed" for job in done), done
    return done


def test_a_cached_servers_jobs_report_their_skipped_calls_and_an_uncached_ones_none(tiny_dir, tmp_path):
    family = load_pipeline(tiny_dir("wan"))  # its own copy: the cache hooks its blocks
    cached = HostedModel("wan", family, None, None, VideoShape(32, 32, 5), 8, step_cache=StepCache(family, 0.3))
    plain = HostedModel("wan", family, None, None, VideoShape(32, 32, 5), 8)
    try:
        with running_server(tmp_path / "cached", {"wan": cached}) as (url, _), \
                httpx.Client(base_url=url, timeout=120) as client:
            # The server's threshold, the same asked for, and 0 (every block) asked for.
            done = _finished(client, [{}, {"step_cache_threshold": 0.3}, {"step_cache_threshold": 0}])
    finally:
        cached.step_cache.remove()
    counts = [job["cached_denoiser_calls"] for job in done]
    assert 0 < counts[0] == counts[1] <= 2 * (REQUEST["num_inference_steps"] - 1) and counts[2] == 0, counts
    assert [job["step_cache_threshold"] for job in done] == [0.3, 0.3, 0.0]
    with running_server(tmp_path / "plain", {"wan": plain}) as (url, _), \
            httpx.Client(base_url=url, timeout=120) as client:
        done = _finished(client, [{}, {"step_cache_threshold": 0}])
        refused = client.post("/v1/videos", json={**REQUEST, "step_cache_threshold": 0.5})
    assert [(job["cached_denoiser_calls"], job["step_cache_threshold"]) for job in done] == [(0, None), (0, None)]
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "step_cache_threshold"
    assert "runs without a step cache" in refused.json()["error"]["message"]
