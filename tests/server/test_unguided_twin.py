"""A job's unguided twin (``compare_unguided``): one more row of the job's batch that joins, steps, leaves
and is cancelled with it, and the job's changes against it, with reward hacking flagged where the reward
guidance pushed up rose while a held-out judge's objective of the same name fell."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
import torch

from guidance.families.base import VideoShape
from guidance.judges import NamedJudge
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.sample_types import SampleSpec
from guidance.sampler import sample
from server.executor import BatchExecutor
from server.job_spec import JobSpec
from server.judging import HeldOutJudges
from server.metrics import Metrics
from server.store import Job
from server.unguided_twin import compare, twin_id, unusable_twin
from tests.server.conftest import running_server, wait_for

SHAPE = VideoShape(height=32, width=32, frames=9)
PROMPT = "a red kite over a beach"
SEED, STEPS, CFG = 5, 3, 3.0
#: Guidance that raises the reward's ``vq`` (the mean of the first latent channels) on every step.
RAISE_VQ = {"weights": {"vq": 1.0}, "strength": 60.0, "window": [0.0, 1.0], "mode": "sum"}


def _halves(latents, t, prompt_embeds):
    flat = latents.float()
    return torch.stack([flat[:, :8].mean(dim=(1, 2, 3, 4)), flat[:, 8:].mean(dim=(1, 2, 3, 4))], dim=1)


#: A reward of known direction, named like the judges' objectives below.
REWARD = CallableReward(_halves, ["vq", "mq"])

#: The frames of the request unguided, alone (``reference`` fills it): the judges below score a clip by its
#: distance from them, so each knows which way guidance moved its video.
REFERENCE: dict[str, torch.Tensor] = {}


class _Distance:
    """Scores ``vq`` by the clip's distance from the unguided clip of its prompt: ``sign`` +1 likes what
    guidance changed (it agrees with the reward), -1 dislikes it (the reward is being gamed)."""

    objectives = ("vq",)
    differentiable = frozenset()

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def score(self, frames: torch.Tensor, prompts, fps: float = 16.0) -> torch.Tensor:
        distance = torch.stack([(clip - REFERENCE[p]).abs().mean() for clip, p in zip(frames.float(), prompts)])
        return self.sign * distance[:, None]


class _Unrelated:
    objectives = ("sharp",)
    differentiable = frozenset()

    def score(self, frames: torch.Tensor, prompts, fps: float = 16.0) -> torch.Tensor:
        return frames.float().mean((1, 2, 3, 4))[:, None]


def away(device: str) -> _Distance:
    """A plugin judge whose ``vq`` falls as guidance moves the video: guidance raising the reward's ``vq``
    against it is reward hacking."""
    return _Distance(-1.0)


def toward(device: str) -> _Distance:
    return _Distance(1.0)


def unrelated(device: str) -> _Unrelated:
    return _Unrelated()


JUDGES = {"away": "tests.server.test_unguided_twin:away", "toward": "tests.server.test_unguided_twin:toward",
          "unrelated": "tests.server.test_unguided_twin:unrelated"}


@pytest.fixture(scope="module")
def hosted(hosted_wan):
    return dataclasses.replace(hosted_wan, reward=REWARD)


@pytest.fixture(scope="module")
def reference(hosted):
    frames = sample(hosted.family, [SampleSpec(PROMPT, seed=SEED, cfg_scale=CFG)], SHAPE, STEPS).frames
    REFERENCE[PROMPT] = frames[0].float()
    yield
    REFERENCE.clear()


# -- the comparison --------------------------------------------------------------------------------


def test_a_reward_that_rose_while_the_judge_of_its_name_fell_is_hacking_only_where_guidance_pushed():
    comparison = compare({"vq": 1.0, "mq": 0.0}, {"vq": 2.0, "mq": 1.5}, {"j": {"vq": 0.4, "mq": 0.1, "x": 9.0}},
                         {"vq": 1.0, "mq": 1.0}, {"j": {"vq": 0.5, "mq": 0.3, "x": 1.0}})
    by_objective = {change.objective: change for change in comparison.changes}
    assert set(by_objective) == {"vq", "mq"}  # x is no reward objective
    vq = by_objective["vq"]
    assert vq.reward_change == pytest.approx(1.0) and vq.judge_change == pytest.approx(-0.1)
    assert by_objective["vq"].hacked and not by_objective["mq"].hacked  # mq fell too, but guidance did not push it
    assert comparison.reward_hacking == [by_objective["vq"]]
    fields = comparison.result_fields()
    assert fields["unguided"]["rewards"] == {"vq": 1.0, "mq": 1.0} and fields["unguided"]["error"] is None
    assert [entry["objective"] for entry in fields["reward_hacking"]] == ["vq"]


def test_a_judge_that_agrees_or_ties_is_no_hacking_and_no_judge_of_the_names_is_no_verdict():
    agrees = compare({"vq": 1.0}, {"vq": 2.0}, {"j": {"vq": 0.6}}, {"vq": 1.0}, {"j": {"vq": 0.5}})
    assert agrees.reward_hacking == [] and agrees.changes[0].judge_change == pytest.approx(0.1)
    ties = compare({"vq": 1.0}, {"vq": 2.0}, {"j": {"vq": 0.5}}, {"vq": 1.0}, {"j": {"vq": 0.5}})
    assert ties.reward_hacking == []
    reward_fell = compare({"vq": 1.0}, {"vq": 0.5}, {"j": {"vq": 0.4}}, {"vq": 1.0}, {"j": {"vq": 0.5}})
    assert reward_fell.reward_hacking == []  # guidance failed to raise it: not gamed
    no_names = compare({"vq": 1.0}, {"vq": 2.0}, {"j": {"sharp": 0.1}}, {"vq": 1.0}, {"j": {"sharp": 0.5}})
    assert no_names.changes == () and no_names.reward_hacking is None
    only_unweighted = compare({"vq": 1.0}, {"vq": 2.0, "mq": 2.0}, {"j": {"mq": 0.1}}, {"vq": 1.0, "mq": 1.0},
                              {"j": {"mq": 0.5}})
    assert len(only_unweighted.changes) == 1 and only_unweighted.reward_hacking is None
    assert compare({"vq": 1.0}, {"vq": 2.0}, None, {"vq": 1.0}, None).reward_hacking is None  # no judges asked
    broken = unusable_twin("non-finite latents").result_fields()
    assert broken["reward_hacking"] is None and "non-finite" in broken["unguided"]["error"]


# -- the twin row in the batch ---------------------------------------------------------------------


def _job(job_id: str, **fields) -> Job:
    spec = JobSpec(model="tiny-wan", prompt=PROMPT, width=32, height=32, num_frames=9, fps=8, seed=SEED,
                   num_inference_steps=STEPS, guidance_scale=CFG, **fields)
    return Job(id=job_id, seq=0, status="in_progress", spec=spec)


def _guided(job_id: str, compare_unguided: bool = True, **fields) -> Job:
    return _job(job_id, guidance=GuidanceSpec({"vq": 1.0}, 60.0, (0.0, 1.0), "sum"), compare_unguided=compare_unguided,
                **fields)


def _executor(hosted, judges=None) -> BatchExecutor:
    return BatchExecutor({"tiny-wan": hosted}, Metrics(), HeldOutJudges(judges or {}))


def test_the_twin_is_a_row_of_the_jobs_batch_and_leaves_with_it(hosted, reference):
    judges = {"away": NamedJudge("away", "-", away("cpu"))}
    executor = _executor(hosted, judges)
    job, other = _guided("job", judges=("away",)), _job("other", judges=("away",))
    assert job.spec.rows == 2 and other.spec.rows == 1
    executor.admit([job, other], job.spec.batch_key(), 0.0)
    assert executor.batch.ids == ["job", twin_id("job"), "other"] and executor.running().size == 3
    assert executor.job_ids == {"job", "other"}  # the twin is no job
    reports = []
    while not executor.batch.finished():
        reports.append([progress.id for progress in executor.step()])
    assert reports == [["job", "other"]] * STEPS  # no progress of the twin: it has no events
    assert set(executor.batch.finished()) == {"job", twin_id("job"), "other"}  # the same steps: they finish together
    finished = {sample.job.id: sample for sample in executor.pop_finished()}
    assert set(finished) == {"job", "other"} and executor.batch is None and not executor.jobs
    result = finished["job"].result
    assert result["unguided"]["rewards"].keys() == result["rewards"].keys() == {"vq", "mq"}
    assert result["unguided"]["judge_scores"]["away"]["vq"] == pytest.approx(0.0, abs=1e-3)  # the twin is the reference
    assert result["rewards"]["vq"] > result["unguided"]["rewards"]["vq"]
    assert [(c["objective"], c["judge"], c["hacked"]) for c in result["reward_hacking"]] == [("vq", "away", True)]
    assert finished["job"].frames.wait().shape[0] == SHAPE.frames  # its own video, not the twin's
    assert "unguided" not in finished["other"].result and finished["other"].result["cost_vs_unguided"] == 1.0


def test_cancelling_a_job_removes_its_twin_and_abandoning_the_batch_drops_it(hosted):
    executor = _executor(hosted)
    job, other = _guided("job"), _guided("other", compare_unguided=False)
    executor.admit([job, other], job.spec.batch_key(), 0.0)
    executor.step()
    assert [left.id for left in executor.cancel({"job"})] == ["job"]
    assert executor.batch.ids == ["other"] and executor.running().size == 1
    executor.admit([_guided("late")], job.spec.batch_key(), 0.0)
    assert executor.batch.ids == ["other", "late", twin_id("late")]
    assert sorted(j.id for j in executor.abandon()) == ["late", "other"] and executor.batch is None


# -- through the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(hosted, reference, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("twin"), {"tiny-wan": hosted}, judges=JUDGES) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            client.app = app
            yield client


REQUEST = {"prompt": PROMPT, "size": "32x32", "num_frames": 9, "num_inference_steps": STEPS, "seed": SEED,
           "guidance_scale": CFG}


def test_a_served_job_reports_its_twin_and_flags_the_judge_that_says_guidance_made_it_worse(client):
    body = {**REQUEST, "reward_guidance": RAISE_VQ, "compare_unguided": True, "judges": ["away", "toward"]}
    created = client.post("/v1/videos", json=body).json()
    assert created["compare_unguided"] is True and created["unguided"] is None
    job = wait_for(client, created["id"])
    assert job["status"] == "completed", job
    twin = job["unguided"]
    assert twin["error"] is None and set(twin["rewards"]) == {"vq", "mq"}
    assert set(twin["judge_scores"]) == {"away", "toward"}
    changes = {change["judge"]: change for change in twin["changes"]}
    assert set(changes) == {"away", "toward"} and {c["objective"] for c in changes.values()} == {"vq"}
    for change in changes.values():
        assert change["reward_change"] == pytest.approx(job["rewards"]["vq"] - twin["rewards"]["vq"], abs=1e-5)
        assert change["reward_change"] > 0 and change["weight"] == 1.0
    assert changes["away"]["judge_change"] < 0 < changes["toward"]["judge_change"]
    assert changes["away"]["hacked"] and not changes["toward"]["hacked"]
    assert job["reward_hacking"] == [changes["away"]]
    assert job["batch_size"] == 2 and job["denoiser_passes"] == STEPS and job["cost_vs_unguided"] > 1
    # Only the job's video is kept.
    store = client.app.state.runtime.store
    assert sorted(p.name for p in store.video_dir.glob("*.mp4")) == [f"{job['id']}.mp4"]


def test_a_judge_that_agrees_is_no_hacking_and_one_of_other_names_gives_no_verdict(client):
    body = {**REQUEST, "reward_guidance": RAISE_VQ, "compare_unguided": True}
    agrees = client.post("/v1/videos", json={**body, "judges": ["toward"]}).json()
    other_names = client.post("/v1/videos", json={**body, "judges": ["unrelated"]}).json()
    agrees, other_names = wait_for(client, agrees["id"]), wait_for(client, other_names["id"])
    assert agrees["reward_hacking"] == [] and len(agrees["unguided"]["changes"]) == 1
    assert other_names["status"] == "completed" and other_names["unguided"]["changes"] == []
    assert other_names["reward_hacking"] is None and set(other_names["unguided"]["judge_scores"]) == {"unrelated"}


@pytest.mark.parametrize("guidance", [None, {"weights": {"vq": 1.0}, "strength": 0}, {"weights": {"vq": 0.0}}])
def test_compare_unguided_needs_active_guidance(client, guidance):
    body = {**REQUEST, "compare_unguided": True, **({"reward_guidance": guidance} if guidance else {})}
    refused = client.post("/v1/videos", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "compare_unguided" and "reward_guidance" in error["message"]
