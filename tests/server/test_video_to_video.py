"""Video-to-video through the API: ``input_reference`` an MP4 or WebM (a multipart file part or a JSON data:
URL) and ``denoise_strength``, stored with the job, run by the worker beside text-to-video jobs, refused with
a 400 naming the field. Served results are compared with the library's run on the video as the worker
decodes it (the same bytes, the same decoder), with a tolerance."""

from __future__ import annotations

import httpx
import pytest

from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.sampler import SampleSpec, sample
from server.input_reference import UploadedImage
from server.input_video import check_video, fitted_video
from server.job_spec import INPUT_REFERENCE_KEY
from server.schema import Limits
from tests.server.clips import encode, noise
from tests.server.conftest import (
    finished_after_restart,
    wait_for,
    wan_pair_fixtures,
)
from tests.server.inputs import data_url, png, post_reference, refusal

SHAPE = VideoShape(32, 32, 9)
LIMITS = Limits(max_steps=400, max_body_bytes=64 * 1024, max_input_reference_bytes=256 * 1024,
                max_input_video_frames=40, max_input_video_pixels=64 * 64)
FIELDS = {"model": "tiny-wan", "prompt": "a red circle moving left", "size": "32x32", "num_frames": 9,
          "num_inference_steps": 4, "seed": 5}
MP4 = encode(noise(9, seed=1))
MP4_URL = data_url(MP4, "video/mp4")


server, client = wan_pair_fixtures(LIMITS, "v2v")


def multipart(client, video: bytes, content_type="video/mp4", **fields):
    return post_reference(client, {**FIELDS, **fields}, "clip.mp4", video, content_type)


def library(hosted, video: bytes | None, strength: float | None = 0.8, guidance=None, **fields) -> list[float]:
    """The final rewards of the same request run by the library (the video fitted as the worker fits it)."""
    body = {**FIELDS, **fields}
    frames = None
    if video is not None:
        ref = check_video(UploadedImage(video, None), LIMITS, 32, 32, 9, 16).reference
        frames = fitted_video(video, ref, 32, 32, 9, 16)
    spec = SampleSpec(body["prompt"], seed=body["seed"], cfg_scale=hosted.family.default_cfg, guidance=guidance,
                      video=frames, denoise_strength=strength if video is not None else None)
    return sample(hosted.family, [spec], SHAPE, body["num_inference_steps"], hosted.reward).rewards[0].tolist()


def test_models_say_which_take_a_video(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["tiny-wan"]["input_reference_video"] is True and cards["tiny-wan"]["input_reference"] == "none"
    assert cards["tiny-wan-i2v"]["input_reference_video"] is False


def test_multipart_and_data_url_videos_give_the_librarys_video_beside_a_text_job(client, hosted_wan):
    job = multipart(client, MP4).json()
    ref = job["input_reference"]
    assert job["status"] == "queued" and ref["media_type"] == "video/mp4" and (ref["frames"], ref["fps"]) == (9, 16.0)
    assert job["denoise_strength"] == 0.8  # the default, filled in
    by_json = client.post("/v1/videos", json={**FIELDS, "input_reference": MP4_URL,
                                              "denoise_strength": 0.5}).json()
    text = client.post("/v1/videos", json={**FIELDS, "seed": 6}).json()
    done = [wait_for(client, j["id"]) for j in (job, by_json, text)]
    assert [j["status"] for j in done] == ["completed"] * 3
    assert done[1]["input_reference"]["sha256"] == ref["sha256"] and done[1]["denoise_strength"] == 0.5
    for finished, expected in zip(done, (library(hosted_wan, MP4, 0.8), library(hosted_wan, MP4, 0.5),
                                         library(hosted_wan, None, seed=6))):
        assert list(finished["rewards"].values()) == pytest.approx(expected, abs=1e-4)
    # An unguided video-to-video job makes a denoiser pass per step it runs, and costs what an unguided row does.
    assert [j["denoiser_passes"] for j in done] == [3, 2, 4]
    assert done[0]["cost_vs_unguided"] == 1.0 and done[1]["cost_vs_unguided"] == 1.0
    assert client.get(f"/v1/videos/{job['id']}/content").content[4:8] == b"ftyp"


def test_a_guided_v2v_job_moves_its_objective(client, hosted_wan):
    guided = {"reward_guidance": {"weights": {"vq": 1.0}, "strength": 80.0, "window": [0.0, 1.0], "mode": "sum"}}
    plain = wait_for(client, client.post("/v1/videos", json={**FIELDS, "input_reference": MP4_URL}).json()["id"])
    steered = wait_for(client, client.post("/v1/videos", json={**FIELDS, "input_reference": MP4_URL,
                                                                "compare_unguided": True, **guided}).json()["id"])
    assert steered["rewards"]["vq"] > plain["rewards"]["vq"] + 1e-4
    # Its unguided twin starts from the same video at the same step: the plain job's figures.
    assert steered["unguided"]["rewards"] == pytest.approx(plain["rewards"], abs=1e-4)
    expected = library(hosted_wan, MP4, guidance=GuidanceSpec({"vq": 1.0}, 80.0, (0.0, 1.0), "sum"))
    assert list(steered["rewards"].values()) == pytest.approx(expected, abs=1e-4)


def test_the_video_is_deleted_with_its_job(client, server):
    job = wait_for(client, multipart(client, MP4, seed=8).json()["id"])
    store = server[1].state.runtime.store
    assert store.read_input(job["id"], INPUT_REFERENCE_KEY) == MP4
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert store.read_input(job["id"], INPUT_REFERENCE_KEY) is None


def test_bad_videos_are_refused_naming_input_reference(client):
    cases = [
        (multipart(client, MP4[: len(MP4) // 2]), "invalid_input_reference", "cannot be read"),
        (multipart(client, encode(noise(60)), ), "input_reference_too_large", "max_input_video_frames is 40"),
        (multipart(client, encode(noise(9, 96, 96))), "input_reference_too_large", "max_input_video_pixels"),
        (multipart(client, encode(noise(5))), "input_reference_too_short", "num_frames 9 at fps 16"),
        (multipart(client, MP4, "video/webm"), "unsupported_input_reference", "says video/webm"),
        (multipart(client, b"not a video", "video/mp4"), "unsupported_input_reference", "not an MP4 or WebM"),
        (multipart(client, MP4, model="tiny-wan-i2v"), "input_reference_not_supported", "image-to-video"),
    ]
    for response, code, words in cases:
        error = refusal(response)
        assert error["param"] == "input_reference" and error["code"] == code and words in error["message"], error
    error = refusal(client.post("/v1/videos", json={**FIELDS, "input_reference": data_url(png(0), "image/png")}))
    assert error["code"] == "input_reference_not_supported" and "a video, for video-to-video, yes" in error["message"]


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "x", True, None])
def test_denoise_strength_out_of_range_or_without_a_video_is_refused(client, value):
    body = {**FIELDS, "input_reference": MP4_URL, "denoise_strength": value}
    if value is None:  # no video: the field applies to video-to-video only
        body = {**FIELDS, "denoise_strength": 0.5}
    error = refusal(client.post("/v1/videos", json=body))
    assert error["param"] == "denoise_strength", error


def test_a_strength_that_leaves_no_step_is_refused(client):
    error = refusal(client.post("/v1/videos", json={**FIELDS, "input_reference": MP4_URL,
                                                   "denoise_strength": 0.2}))
    assert error["param"] == "denoise_strength" and "must be at least 1" in error["message"]


def test_a_queued_video_job_survives_a_restart(hosted_wan, tmp_path, server):
    """The video lives in the store with the job: a server started on the data directory runs it."""
    done = finished_after_restart(server[1], {**FIELDS, "input_reference": MP4_URL, "denoise_strength": 0.75},
                                  tmp_path, {"tiny-wan": hosted_wan}, LIMITS)
    assert done["status"] == "completed" and done["denoise_strength"] == 0.75
    assert list(done["rewards"].values()) == pytest.approx(library(hosted_wan, MP4, 0.75), abs=1e-4)


def test_openai_sdk_sends_a_video_input_reference_as_a_file(server):
    import openai

    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)
    video = client.videos.create(model="tiny-wan", prompt="a red circle", size="32x32",
                                 input_reference=("clip.mp4", MP4, "video/mp4"),
                                 extra_body={"num_inference_steps": 2, "num_frames": 9, "seed": 1,
                                             "denoise_strength": 0.5})
    assert video.status == "queued" and video.model_extra["input_reference"]["media_type"] == "video/mp4"
    with httpx.Client(base_url=server[0], timeout=120) as http:
        done = wait_for(http, video.id)
    assert done["status"] == "completed" and done["denoise_strength"] == 0.5 and done["denoiser_passes"] == 1
