"""Image-to-video through the API: ``input_reference`` as a multipart file part (the OpenAI SDK's way) and
as a JSON data: URL, stored with the job, run by the worker, refused with a 400 naming the field."""

from __future__ import annotations

import httpx
import pytest

from guidance.families.base import VideoShape
from guidance.sampler import SampleSpec, sample
from server.hosted_model import HostedModel
from server.input_reference import check_image, fitted_image
from server.job_spec import INPUT_REFERENCE_KEY
from server.schema import Limits
from tests.server.conftest import (
    finished_after_restart,
    wait_for,
    wan_pair_fixtures,
)
from tests.server.inputs import data_url, png, post_reference, refusal

SHAPE = VideoShape(32, 32, 9)
LIMITS = Limits(max_steps=400, max_body_bytes=64 * 1024, max_input_reference_bytes=256 * 1024)
FIELDS = {"model": "tiny-wan-i2v", "prompt": "a red circle moving left", "size": "32x32", "num_frames": 9,
          "num_inference_steps": 3, "seed": 5}


server, client = wan_pair_fixtures(LIMITS, "i2v")


def multipart(client, image: bytes, content_type="image/png", **fields):
    return post_reference(client, {**FIELDS, **fields}, "first.png", image, content_type)


def library_rewards(hosted: HostedModel, image: bytes, **fields) -> list[float]:
    """The final rewards of the same request run by the library, on the image as the worker fits it."""
    body = {**FIELDS, **fields}
    ref = check_image(data_url(image), LIMITS, SHAPE.width, SHAPE.height).reference
    spec = SampleSpec(body["prompt"], seed=body["seed"], cfg_scale=hosted.family.default_cfg,
                      image=fitted_image(image, ref, SHAPE.width, SHAPE.height))
    return sample(hosted.family, [spec], SHAPE, body["num_inference_steps"], hosted.reward).rewards[0].tolist()


def test_models_say_which_take_an_image(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["tiny-wan-i2v"]["input_reference"] == "required"
    assert cards["tiny-wan"]["input_reference"] == "none"


def test_multipart_and_data_url_images_give_the_librarys_video(client, hosted_i2v):
    image = png(0)
    job = multipart(client, image).json()
    assert job["status"] == "queued" and job["input_reference"]["media_type"] == "image/png"
    assert (job["input_reference"]["width"], job["input_reference"]["height"]) == (32, 32)
    by_json = client.post("/v1/videos", json={**FIELDS, "input_reference": data_url(image)}).json()
    assert by_json["input_reference"] == job["input_reference"]
    done = [wait_for(client, j["id"]) for j in (job, by_json)]
    assert [j["status"] for j in done] == ["completed", "completed"]
    expected = library_rewards(hosted_i2v, image)
    for finished in done:
        assert list(finished["rewards"].values()) == pytest.approx(expected, abs=1e-4)
    # The image reaches the sampler: another image, another video.
    other = wait_for(client, multipart(client, png(1)).json()["id"])
    assert max(abs(a - b) for a, b in zip(other["rewards"].values(), expected)) > 1e-4
    assert client.get(f"/v1/videos/{job['id']}/content").content[4:8] == b"ftyp"


def test_the_image_is_deleted_with_its_job(client, server):
    job = wait_for(client, multipart(client, png(2)).json()["id"])
    store = server[1].state.runtime.store
    assert store.read_input(job["id"], INPUT_REFERENCE_KEY) == png(2)
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert store.read_input(job["id"], INPUT_REFERENCE_KEY) is None


def test_a_larger_image_of_the_videos_aspect_is_resized(client):
    job = wait_for(client, multipart(client, png(3, 64, 64)).json()["id"])
    assert job["status"] == "completed" and job["input_reference"]["width"] == 64


def test_refusals_name_input_reference(client):
    error = refusal(client.post("/v1/videos", json={**FIELDS, "model": "tiny-wan", "input_reference": data_url(png(0))}))
    assert error["param"] == "input_reference" and error["code"] == "input_reference_not_supported"
    assert "text-to-video only" in error["message"]
    error = refusal(client.post("/v1/videos", json=FIELDS))
    assert error["param"] == "input_reference" and error["code"] == "input_reference_required"
    error = refusal(multipart(client, png(0, 64, 32)))
    assert error["param"] == "input_reference" and error["code"] == "input_reference_aspect_mismatch"
    error = refusal(multipart(client, b"%PDF-1.4 not an image", "application/pdf"))
    assert error["param"] == "input_reference" and error["code"] == "unsupported_input_reference"
    error = refusal(client.post("/v1/videos", json={**FIELDS, "input_reference": "https://example.com/a.png"}))
    assert error["param"] == "input_reference" and "data: URL" in error["message"]
    error = refusal(client.post("/v1/videos", json={**FIELDS, "input_reference": 7}))
    assert error["param"] == "input_reference"
    form = {k: str(v) for k, v in FIELDS.items()}
    error = refusal(client.post("/v1/videos", data=form, files={"prompt_file": ("p.txt", b"hi", "text/plain")}))
    assert error["param"] == "prompt_file"


def test_body_and_image_size_limits(client):
    # An image earns a body room for itself, not for the other fields.
    error = refusal(client.post("/v1/videos", json={**FIELDS, "negative_prompt": "x" * 70_000,
                                                   "input_reference": data_url(png(0))}), 413)
    assert error["code"] == "body_too_large"
    error = refusal(client.post("/v1/videos", json={**FIELDS, "negative_prompt": " " * 70_000}), 413)
    assert error["code"] == "body_too_large" and "65536" in error["message"]
    big = png(0, 320, 320)  # ~300 KB of noise: over max_input_reference_bytes, under the body limit
    assert LIMITS.max_input_reference_bytes < len(big) < LIMITS.max_upload_body_bytes
    error = refusal(multipart(client, big))
    assert error["param"] == "input_reference" and error["code"] == "input_reference_too_large"


def test_openai_sdk_sends_input_reference_as_a_file(server):
    import openai

    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)
    video = client.videos.create(model="tiny-wan-i2v", prompt="a red circle", size="32x32",
                                 input_reference=("first.png", png(4), "image/png"),
                                 extra_body={"num_inference_steps": 2, "num_frames": 5, "seed": 1})
    assert video.status == "queued" and video.model_extra["input_reference"]["media_type"] == "image/png"
    with httpx.Client(base_url=server[0], timeout=120) as http:
        assert wait_for(http, video.id)["status"] == "completed"


def test_a_queued_image_job_survives_a_restart(hosted_wan, hosted_i2v, tmp_path, server):
    """The image lives in the store with the job: a server started on the data directory runs it."""
    done = finished_after_restart(server[1], {**FIELDS, "input_reference": data_url(png(0))}, tmp_path,
                                  {"tiny-wan-i2v": hosted_i2v}, LIMITS)
    assert done["status"] == "completed"
    assert list(done["rewards"].values()) == pytest.approx(library_rewards(hosted_i2v, png(0)), abs=1e-4)
