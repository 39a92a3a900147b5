"""CogVideoX image-to-video through the API: an image job with reward-gradient guidance gives the library's
result; the search modes, which need a flow-matching model, are refused."""

from __future__ import annotations

import httpx
import pytest

from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sampler import SampleSpec, sample
from server.hosted_model import HostedModel
from server.input_reference import check_image, fitted_image
from server.schema import Limits
from tests.server.conftest import running_server, wait_for
from tests.server.inputs import data_url, png

SHAPE = VideoShape(32, 32, 9)
LIMITS = Limits(max_input_reference_bytes=256 * 1024)
FIELDS = {"model": "tiny-cog-i2v", "prompt": "a red circle moving left", "size": "32x32", "num_frames": 9,
          "num_inference_steps": 3, "seed": 5, "input_reference": data_url(png(0))}
GUIDED = {"weights": {"vq": 1.0}, "strength": 40.0, "window": [0.0, 1.0], "mode": "sum"}


@pytest.fixture(scope="module")
def hosted(tiny_family):
    family = tiny_family("cogvideox-i2v")
    return HostedModel("tiny-cog-i2v", family, init_reward_model(family, ["vq", "mq"], num_blocks=1, seed=0), None,
                       SHAPE, 3)


@pytest.fixture(scope="module")
def client(hosted, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cog-i2v"), {"tiny-cog-i2v": hosted}, limits=LIMITS) as (url, _):
        with httpx.Client(base_url=url, timeout=120) as http:
            yield http


def test_a_guided_image_job_gives_the_librarys_result(client, hosted):
    card = client.get("/v1/models").json()["data"][0]
    assert card["input_reference"] == "required" and card["input_reference_video"] is False
    job = wait_for(client, client.post("/v1/videos", json={**FIELDS, "reward_guidance": GUIDED}).json()["id"])
    assert job["status"] == "completed" and job["input_reference"]["media_type"] == "image/png"
    ref = check_image(FIELDS["input_reference"], LIMITS, 32, 32).reference
    spec = SampleSpec(FIELDS["prompt"], seed=5, cfg_scale=hosted.family.default_cfg,
                      guidance=GuidanceSpec({"vq": 1.0}, 40.0, (0.0, 1.0), "sum"),
                      image=fitted_image(png(0), ref, 32, 32))
    expected = sample(hosted.family, [spec], SHAPE, 3, hosted.reward).rewards[0].tolist()
    assert list(job["rewards"].values()) == pytest.approx(expected, abs=1e-4)


def test_search_modes_and_videos_are_refused(client):
    response = client.post("/v1/videos", json={**FIELDS, "reward_guidance": {"weights": {"vq": 1.0},
                                                                              "mode": "best_of_n"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "reward_guidance.mode"
    response = client.post("/v1/videos", json={**FIELDS, "input_reference": "data:video/mp4;base64,AAAAIGZ0eXA="})
    assert response.status_code == 400 and response.json()["error"]["code"] == "input_reference_not_supported"
