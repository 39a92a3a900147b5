"""Step-level continuous batching through the HTTP API: late arrivals join the running batch, leave
when their own schedule ends, and get the output they would get alone; static mode makes them wait, and so
does a step-cost bound that growing the batch would break."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import running_server, wait_for

LONG = {"prompt": "a red circle moving left", "num_inference_steps": 200, "seed": 1}
SHORT = {"prompt": "a blue square", "num_inference_steps": 3, "seed": 2, "guidance_scale": 1.0,
         "reward_guidance": {"weights": {"vq": 1.0}, "window": [0.0, 1.0]}}


def _run(tmp_path, hosted_wan, batching, name, **overrides):
    with running_server(tmp_path / name, {"tiny-wan": hosted_wan}, max_batch=4, batch_wait_ms=0,
                        batching=batching, **overrides) as (url, app):
        with httpx.Client(base_url=url, timeout=120) as client:
            long_id = client.post("/v1/videos", json=LONG).json()["id"]
            wait_for(client, long_id, statuses=("in_progress",))
            short_id = client.post("/v1/videos", json=SHORT).json()["id"]
            short = wait_for(client, short_id)
            long_status = client.get(f"/v1/videos/{long_id}").json()["status"]
            long = wait_for(client, long_id)
            alone_id = client.post("/v1/videos", json=SHORT).json()["id"]
            alone = wait_for(client, alone_id)
            metrics = client.get("/metrics").text
    return short, long_status, long, alone, metrics


def test_a_late_job_joins_the_running_batch_and_leaves_first(hosted_wan, tmp_path):
    short, long_status, long, alone, metrics = _run(tmp_path, hosted_wan, "continuous", "continuous")
    assert short["status"] == long["status"] == alone["status"] == "completed"
    assert long_status == "in_progress"  # the short job did not wait for the long one
    assert 'nrg_joins_held_by_step_cost_total{worker="local"} 0.0' in metrics
    assert short["batch_size"] == 2 and alone["batch_size"] == 1
    # Same seed, same output whoever shared its steps (rewards are computed from the final latents).
    for name, value in alone["rewards"].items():
        assert short["rewards"][name] == pytest.approx(value, abs=1e-4)


def test_static_batching_makes_a_late_job_wait(hosted_wan, tmp_path):
    short, long_status, long, alone, _ = _run(tmp_path, hosted_wan, "static", "static")
    assert short["status"] == long["status"] == "completed"
    assert long_status == "completed"  # the short job started only once the long batch had ended
    assert short["batch_size"] == 1
    for name, value in alone["rewards"].items():
        assert short["rewards"][name] == pytest.approx(value, abs=1e-4)


def test_a_join_that_would_slow_the_step_past_the_bound_waits(hosted_wan, tmp_path):
    """At a bound of 1x, no batch may grow: the running job's first step taught one row's time, and two rows
    are predicted to take longer (proportionally, with only one row count seen) whatever the machine's speed."""
    short, long_status, long, alone, metrics = _run(tmp_path, hosted_wan, "continuous", "bounded",
                                                    max_step_slowdown=1.0)
    assert short["status"] == long["status"] == "completed"
    assert long_status == "completed" and short["batch_size"] == 1
    assert 'nrg_joins_held_by_step_cost_total{worker="local"} 1.0' in metrics
    for name, value in alone["rewards"].items():
        assert short["rewards"][name] == pytest.approx(value, abs=1e-4)
