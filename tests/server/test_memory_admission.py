"""Admission by the memory estimate (``--memory-budget``): a job that alone needs more than the budget fails at
once with the figure it would need, instead of running out of memory mid-way; the estimate of a job guided by a
judge's gradient counts that gradient's graph; the worker goes on serving what fits."""

import httpx

from guidance.judges.as_reward import JudgeReward
from guidance.judges.classic import ClassicJudge
from guidance.memory import batch_estimate
from tests.server.conftest import running_server, wait_for

PLAIN = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 1}
JUDGED = {**PLAIN, "reward_guidance": {"judge": "classic", "mode": "relative", "weights": {"sharpness": 1.0}}}


def test_a_job_over_the_budget_fails_with_its_figure_and_the_rest_run(hosted_wan, tmp_path):
    shape = hosted_wan.default_shape
    plain = batch_estimate(hosted_wan.family, hosted_wan.reward, shape)
    graph = JudgeReward(hosted_wan.family, ClassicJudge(("sharpness",))).gradient_graph_bytes(shape)
    assert graph > plain.reward  # a decoder's graph outweighs the tiny reward trunk's
    budget = plain.total(1) + (graph - plain.reward) // 2  # a plain job fits, a judge-gradient one does not
    search = {**JUDGED, "reward_guidance": {**JUDGED["reward_guidance"], "mode": "best_of_n", "particles": 2}}
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, memory_budget_gib=budget / 2**30,
                        judges={"classic": "classic"}) as (url, _), httpx.Client(base_url=url, timeout=120) as client:
        judged = wait_for(client, client.post("/v1/videos", json=JUDGED).json()["id"])
        searched = wait_for(client, client.post("/v1/videos", json=search).json()["id"])
        plain_job = wait_for(client, client.post("/v1/videos", json=PLAIN).json()["id"])
        metrics = client.get("/metrics").text
    assert judged["status"] == "failed" and judged["error"]["code"] == "exceeds_memory_budget"
    message = judged["error"]["message"]
    need = plain.weights + graph + plain.per_row
    assert f"needs about {need / 2**30:.2f} GiB" in message and f"budget of {budget / 2**30:.2f} GiB" in message
    # Ranking by the judge builds no graph: the search job fits, as does the plain one.
    assert searched["status"] == plain_job["status"] == "completed"
    assert 'nrg_requests_total{status="failed"} 1.0' in metrics
