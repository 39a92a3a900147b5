"""Held-out judges in the server: every finished job is scored by the operator's judges it asked for,
labelled apart from the reward it was steered by; a failing judge costs only its own scores."""

from __future__ import annotations

import httpx
import pytest
import torch

from guidance.families.base import VideoShape
from guidance.judges import NamedJudge
from server.judging import HeldOutJudges, parse_judge_flags
from tests.server.conftest import running_server, wait_for


class _Brightness:
    objectives = ("bright",)
    differentiable = frozenset({"bright"})

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def score(self, frames, prompts, fps=16.0):
        self.calls.append((frames.shape[0], fps))
        return frames.mean((1, 2, 3, 4))[:, None]


class _Broken:
    objectives = ("x",)
    differentiable = frozenset()

    def score(self, frames, prompts, fps=16.0):
        raise RuntimeError("judge bug")


def brightness(device: str) -> _Brightness:
    """A plugin factory, as ``--judge bright=tests.server.test_judging:brightness`` names it."""
    return _Brightness()


def test_each_clip_gets_the_judges_it_asked_for_grouped_by_frame_rate():
    bright = _Brightness()
    judges = HeldOutJudges({"bright": NamedJudge("bright", "-", bright), "broken": NamedJudge("broken", "-", _Broken())})
    frames = torch.stack([torch.full((2, 4, 4, 3), v) for v in (0.25, 0.5, 0.75)])
    scores = judges.score(frames, ["a", "b", "c"], [16, 8, 16], [["bright", "broken"], ["bright"], []])
    assert scores == [{"bright": {"bright": 0.25}}, {"bright": {"bright": 0.5}}, None]
    assert sorted(bright.calls) == [(1, 8), (1, 16)]  # the third clip asked for no judge


def test_judge_flags_and_the_demo_default(monkeypatch):
    from server.cli import build_parser
    from server.cli.serve import server_config
    from server.config import DEMO_JUDGES

    assert parse_judge_flags(["q=classic:sharpness", "classic"]) == {"q": "classic:sharpness", "classic": "classic"}
    with pytest.raises(ValueError, match="--judge q given twice"):
        parse_judge_flags(["q=classic", "q=classic:exposure"])
    parser = build_parser()
    assert server_config(parser.parse_args(["serve"])).judges == DEMO_JUDGES  # the embedded demo
    assert server_config(parser.parse_args(["serve", "--model", "m=/m"])).judges == {}
    monkeypatch.setenv("NRG_JUDGE", "q=classic:sharpness,exposure; t=classic")
    assert build_parser().parse_args(["serve"]).judge == ["q=classic:sharpness,exposure", "t=classic"]


@pytest.fixture(scope="module")
def judged_server(hosted_wan, tmp_path_factory):
    judges = {"quality": "classic:sharpness,exposure", "bright": "tests.server.test_judging:brightness"}
    with running_server(tmp_path_factory.mktemp("judged"), {"tiny-wan": hosted_wan}, judges=judges) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


REQUEST = {"prompt": "a red circle", "size": "32x32", "num_frames": 9, "num_inference_steps": 2, "seed": 5}
SHAPE_32 = VideoShape(32, 32, 9)


def test_a_guided_job_reports_its_reward_and_the_held_out_judges_apart(judged_server):
    body = {**REQUEST, "reward_guidance": {"weights": {"vq": 1.0}}}
    job = wait_for(judged_server, judged_server.post("/v1/videos", json=body).json()["id"])
    assert job["status"] == "completed"
    assert set(job["rewards"]) == {"vq", "mq", "ta"}
    assert set(job["judge_scores"]) == {"quality", "bright"}
    assert set(job["judge_scores"]["quality"]) == {"sharpness", "exposure"}
    assert 0.0 <= job["judge_scores"]["bright"]["bright"] <= 1.0


def test_a_job_names_a_subset_or_none_and_unknown_names_are_refused(judged_server):
    only = wait_for(judged_server, judged_server.post("/v1/videos", json={**REQUEST, "judges": ["bright"]}).json()["id"])
    assert set(only["judge_scores"]) == {"bright"}
    none = wait_for(judged_server, judged_server.post("/v1/videos", json={**REQUEST, "judges": []}).json()["id"])
    assert none["status"] == "completed" and none["judge_scores"] is None
    refused = judged_server.post("/v1/videos", json={**REQUEST, "judges": ["beauty"]})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "judges" and error["code"] == "judge_not_found" and "beauty" in error["message"]


def test_a_model_without_a_reward_is_steered_by_a_judge_ranked_search(tiny_family, tmp_path):
    from server.hosted_model import HostedModel

    bare = HostedModel("bare", tiny_family("wan"), None, None, SHAPE_32, 4)
    judges = {"bright": "tests.server.test_judging:brightness"}
    with running_server(tmp_path, {"bare": bare}, judges=judges) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            body = {**REQUEST, "reward_guidance": {"weights": {"bright": 1.0}, "judge": "bright", "particles": 3}}
            job = wait_for(client, client.post("/v1/videos", json=body).json()["id"])
            assert job["status"] == "completed", job
            assert job["reward_guidance"]["judge"] == "bright" and job["reward_guidance"]["mode"] == "best_of_n"
            assert set(job["rewards"]) == {"bright"} and job["cost_vs_unguided"] > 1
            assert set(job["judge_scores"]) == {"bright"}
            assert job["guidance_decodes"] == 3  # three particles ranked once; the survivor's final score is free
            unknown = client.post("/v1/videos", json={**body, "reward_guidance": {"weights": {"x": 1}, "judge": "q"}})
            assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "judge_not_found"
            bad_weight = client.post("/v1/videos", json={**body, "reward_guidance": {"weights": {"vq": 1},
                                                                                        "judge": "bright"}})
            assert bad_weight.status_code == 400 and "vq" in bad_weight.json()["error"]["message"]
            no_judge = client.post("/v1/videos", json={**REQUEST, "reward_guidance": {"weights": {"bright": 1}}})
            assert no_judge.status_code == 400 and "needs a judge" in no_judge.json()["error"]["message"]


def test_a_judge_guides_by_its_gradient_on_its_differentiable_objectives_only(tiny_family, tmp_path):
    from server.hosted_model import HostedModel

    bare = HostedModel("bare", tiny_family("wan"), None, None, SHAPE_32, 4)
    with running_server(tmp_path, {"bare": bare}, judges={"quality": "classic:sharpness,motion_smoothness"}) as (
            url, _), httpx.Client(base_url=url, timeout=60) as client:
        guidance = {"judge": "quality", "mode": "relative", "window": [0, 1]}
        refused = client.post("/v1/videos", json={**REQUEST, "reward_guidance": {
            **guidance, "weights": {"sharpness": 1, "motion_smoothness": 0.5}}})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "reward_guidance.weights"
        assert error["message"].startswith("reward_guidance.weights: motion_smoothness has no gradient")
        assert "differentiable objectives (sharpness)" in error["message"]
        created = client.post("/v1/videos", json={**REQUEST, "reward_guidance": {
            **guidance, "weights": {"sharpness": 1}}})
        assert created.status_code == 200, created.text
        assert created.json()["reward_guidance"] == {"weights": {"sharpness": 1.0}, "strength": 3.0,
                                                     "window": [0.0, 1.0], "mode": "relative", "particles": None,
                                                     "judge": "quality"}
        job = wait_for(client, created.json()["id"])
        assert job["status"] == "completed", job
        assert set(job["rewards"]) == set(job["judge_scores"]["quality"]) == {"sharpness", "motion_smoothness"}
        # Two steps: the first (t = 1) is never guided, the second decodes and backpropagates; the final score is
        # of the returned video's own decode.
        assert job["guidance_decodes"] == 1 and job["cost_vs_unguided"] > 1.0  # the decoder backward is measured time
