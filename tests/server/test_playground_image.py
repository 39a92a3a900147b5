"""The playground's image and video input in a real browser (Debian's chromium under Playwright): shown for
models that take an image or a clip, filled by choosing or dropping a file, sent as the job's
``input_reference`` (a clip with its ``denoise_strength``)."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from guidance.families.base import VideoShape
from server.hosted_model import HostedModel
from server.schema import Limits
from tests.server.clips import encode, noise
from tests.server.conftest import running_server, until, wait_for
from tools.playground_screenshot import CHROMIUM, CHROMIUM_ARGS

TIMEOUT_MS = 120_000
SHAPE = VideoShape(height=32, width=32, frames=9)

pytestmark = pytest.mark.slow


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_family):
    models = {"tiny-wan-i2v": HostedModel("tiny-wan-i2v", tiny_family("wan-i2v"), None, None, SHAPE, 2),
              "tiny-wan": HostedModel("tiny-wan", tiny_family("wan"), None, None, SHAPE, 2),
              "tiny-cog": HostedModel("tiny-cog", tiny_family("cogvideox"), None, None, SHAPE, 2)}
    with running_server(tmp_path_factory.mktemp("playground-i2v"), models, limits=Limits(max_steps=400)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def test_an_image_is_chosen_or_dropped_and_sent_as_input_reference(page, server):
    page.wait_for_selector("#model option[value='tiny-wan-i2v']", state="attached")
    page.select_option("#model", "tiny-wan-i2v")
    assert page.is_visible("#image-field") and page.inner_text("#image-need") == "(this model needs one)"
    page.set_input_files("#input-reference", files=[{"name": "first.png", "mimeType": "image/png",
                                                       "buffer": _png(0)}])
    page.wait_for_selector("#image-preview:not([hidden])")
    page.fill("#seed", "3")
    page.click("#submit")
    page.wait_for_selector("#status:text('completed')")
    with httpx.Client(base_url=server) as client:
        job = client.get("/v1/videos", params={"limit": 1}).json()["data"][0]
    assert job["status"] == "completed" and job["input_reference"]["width"] == 32
    first = job["input_reference"]["sha256"]
    # Dropped on the form: another image replaces it.
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        document.querySelector("#job-form").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }""", base64.b64encode(_png(1)).decode())
    page.wait_for_function("() => document.querySelector('#image-preview').src.length > 100")
    page.click("#submit")
    with httpx.Client(base_url=server) as client:
        latest = until(lambda: [j for j in client.get("/v1/videos", params={"limit": 1}).json()["data"]
                                if j["input_reference"]["sha256"] != first], "the dropped image's job")[0]
        assert wait_for(client, latest["id"])["status"] == "completed"
    # A text-to-video Wan takes a clip instead (video-to-video): the image goes, an image is refused, a
    # clip is sent with its denoise strength.
    page.select_option("#model", "tiny-wan")
    assert page.is_visible("#image-field") and page.inner_text("#reference-label") == "Clip to start from"
    assert page.get_attribute("#input-reference", "accept") == "video/mp4,video/webm"
    assert not page.is_visible("#image-preview") and not page.is_visible("#strength-field")
    page.set_input_files("#input-reference", files=[{"name": "first.png", "mimeType": "image/png", "buffer": _png(2)}])
    page.wait_for_selector("#error:text('is not what this model takes: MP4, WEBM')")
    page.set_input_files("#input-reference", files=[{"name": "clip.mp4", "mimeType": "video/mp4",
                                                       "buffer": encode(noise(9, seed=1))}])
    page.wait_for_selector("#strength-field:not([hidden])")
    page.fill("#denoise-strength", "0.5")
    page.click("#submit")
    with httpx.Client(base_url=server) as client:
        clip_job = until(lambda: [j for j in client.get("/v1/videos", params={"limit": 1}).json()["data"]
                                  if j["model"] == "tiny-wan"], "the clip's job")[0]
        done = wait_for(client, clip_job["id"])
    assert done["status"] == "completed" and done["input_reference"]["media_type"] == "video/mp4"
    assert done["denoise_strength"] == 0.5
    # A model that takes neither hides the field and sends nothing.
    page.select_option("#model", "tiny-cog")
    assert not page.is_visible("#image-field")
