"""Aligned checkpoints through the API: a LoRA changes the output, the base comes back after, and
jobs with different checkpoints never share a batch."""

import httpx
import numpy as np

from guidance.checkpoints import CheckpointRegistry
from guidance.families import load_pipeline
from server.hosted_model import HostedModel
from tests.guidance.test_checkpoints import _save_diffusers_lora
from tests.server.conftest import running_server, wait_for
from tests.server.test_api import _frames

BODY = {"prompt": "a red circle moving left", "num_inference_steps": 3, "seed": 3, "guidance_scale": 1.0}


def test_lora_checkpoint_changes_output_and_base_is_restored(tiny_dir, hosted_wan, tmp_path):
    family = load_pipeline(tiny_dir("wan"))  # fresh: the registry injects LoRA layers into it
    _save_diffusers_lora(family.transformer, tmp_path / "lora")
    registry = CheckpointRegistry(family, {"dpo": tmp_path / "lora"})
    hosted = HostedModel("tiny-wan", family, None, registry, hosted_wan.default_shape, 3)
    with running_server(tmp_path, {"tiny-wan": hosted}, max_batch=2, batch_wait_ms=300) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/v1/models").json()["data"][0]["checkpoints"] == [{"name": "dpo", "kind": "lora"}]
            ids = [client.post("/v1/videos", json=body).json()["id"]
                   for body in (BODY, {**BODY, "checkpoint": "dpo"})]
            base, tuned = (wait_for(client, i) for i in ids)
            assert base["batch_size"] == tuned["batch_size"] == 1 and tuned["checkpoint"] == "dpo"
            again = wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])
            videos = {}
            for name, job in (("base", base), ("tuned", tuned), ("again", again)):
                (tmp_path / f"{name}.mp4").write_bytes(client.get(f"/v1/videos/{job['id']}/content").content)
                videos[name] = _frames(tmp_path / f"{name}.mp4")
    assert np.abs(videos["base"] - videos["tuned"]).max() > 8
    assert np.array_equal(videos["base"], videos["again"])
