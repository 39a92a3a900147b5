"""Aligned checkpoints through the API: LoRA checkpoints (at any ``checkpoint_scale``) and the base
model share one batch, a full-weight checkpoint runs in batches of its own, and the base comes back."""

import httpx
import numpy as np

from guidance.checkpoints import CheckpointRegistry
from guidance.families import load_pipeline
from server.hosted_model import HostedModel
from tests.guidance.random_lora import save_random_lora
from tests.guidance.test_checkpoints import _save_full
from tests.server.conftest import (
    decoded,
    full_batches_only,
    running_server,
    until,
    wait_for,
)

BODY = {"prompt": "a red circle moving left", "num_inference_steps": 3, "seed": 3, "guidance_scale": 1.0}


def _videos(client, jobs):
    return {name: decoded(client.get(f"/v1/videos/{job['id']}/content").content).astype(int)
            for name, job in jobs.items()}


def test_lora_jobs_at_any_scale_share_the_base_models_batch(tiny_dir, hosted_wan, tmp_path):
    family = load_pipeline(tiny_dir("wan"))  # fresh: the registry injects LoRA layers into it
    save_random_lora(family.transformer, tmp_path / "lora")
    _save_full(family.transformer, tmp_path / "full", seed=3)
    registry = CheckpointRegistry(family, {"dpo": tmp_path / "lora", "full": tmp_path / "full"})
    hosted = HostedModel("tiny-wan", family, None, registry, hosted_wan.default_shape, 3)
    bodies = {"base": BODY, "tuned": {**BODY, "checkpoint": "dpo"},
              "half": {**BODY, "checkpoint": "dpo", "checkpoint_scale": 0.5},
              "zero": {**BODY, "checkpoint": "dpo", "checkpoint_scale": 0}, "full": {**BODY, "checkpoint": "full"}}
    with running_server(tmp_path, {"tiny-wan": hosted}, max_batch=4, batch_wait_ms=0) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/v1/models").json()["data"][0]["checkpoints"] == [
                {"name": "dpo", "kind": "lora"}, {"name": "full", "kind": "full"}]
            with full_batches_only(app):  # the four LoRA/base jobs start together once all are queued
                ids = {name: client.post("/v1/videos", json=body).json()["id"] for name, body in bodies.items()}
                until(lambda: client.get(f"/v1/videos/{ids['zero']}").json()["status"] != "queued",
                      "the four LoRA/base jobs started")
            # and the full-weight job, alone by its key, starts when that batch has ended
            jobs = {name: wait_for(client, i) for name, i in ids.items()}
            assert {name: job["batch_size"] for name, job in jobs.items()} == {
                "base": 4, "tuned": 4, "half": 4, "zero": 4, "full": 1}
            assert jobs["tuned"]["checkpoint_scale"] == 1.0 and jobs["half"]["checkpoint_scale"] == 0.5
            assert jobs["full"]["checkpoint_scale"] is None and jobs["base"]["checkpoint_scale"] is None
            alone = wait_for(client, client.post("/v1/videos", json=bodies["tuned"]).json()["id"])
            again = wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])
            assert alone["batch_size"] == again["batch_size"] == 1
            videos = _videos(client, {**jobs, "alone": alone, "again": again})
    assert np.abs(videos["base"] - videos["tuned"]).max() > 8
    assert np.abs(videos["half"] - videos["tuned"]).max() > 2 and np.abs(videos["half"] - videos["base"]).max() > 2
    assert np.array_equal(videos["zero"], videos["base"])  # scale 0 is the base model, in the same batch
    # Alone vs in a batch of four: a batch of another size may sum in another order (matmul blocking
    # follows the batch), which can move a rounded pixel, and H.264 can turn that into a few levels
    # nearby, so these agree on average to well under a level, not in bits.
    assert np.abs(videos["again"] - videos["base"]).mean() < 1.0
    assert np.abs(videos["tuned"] - videos["alone"]).mean() < 1.0  # mixed batch vs alone
    assert np.abs(videos["full"] - videos["base"]).max() > 8


def test_checkpoint_scale_errors_name_the_field(tiny_dir, hosted_wan, tmp_path):
    family = load_pipeline(tiny_dir("wan"))
    _save_full(family.transformer, tmp_path / "full", seed=3)
    registry = CheckpointRegistry(family, {"full": tmp_path / "full"})
    hosted = HostedModel("tiny-wan", family, None, registry, hosted_wan.default_shape, 3)
    with running_server(tmp_path, {"tiny-wan": hosted}) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            for body, message in (
                ({**BODY, "checkpoint_scale": 0.5}, "checkpoint_scale needs a checkpoint"),
                ({**BODY, "checkpoint": "full", "checkpoint_scale": 0.5}, "applies to LoRA checkpoints"),
                ({**BODY, "checkpoint": "full", "checkpoint_scale": 5}, "less than or equal to 4"),
            ):
                response = client.post("/v1/videos", json=body)
                error = response.json()["error"]
                assert response.status_code == 400 and error["param"] == "checkpoint_scale", body
                assert message in error["message"], error
