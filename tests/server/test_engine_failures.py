"""A failing batch fails only the jobs it hit; after an OOM a batch is retried one job at a time."""

import httpx
import torch

from guidance.families.wan import WanFamily
from server.hosted_model import HostedModel
from tests.server.conftest import full_batches_only, running_server, until, wait_for

BODY = {"prompt": "a red circle", "num_inference_steps": 2}


class FlakyWan(WanFamily):
    """Runs out of memory on any batch larger than one; a prompt with 'poison' always fails."""

    def encode_prompts(self, prompts, negative_prompts):
        if any("poison" in p for p in prompts):
            raise RuntimeError("poisoned prompt")
        return super().encode_prompts(prompts, negative_prompts)

    def predict(self, model, latents, *args, **kwargs):
        if latents.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (simulated)")
        return super().predict(model, latents, *args, **kwargs)


def test_oom_retries_one_by_one_and_poison_fails_alone(hosted_wan, tmp_path):
    flaky = HostedModel("flaky", FlakyWan(hosted_wan.family.pipe), None, None, hosted_wan.default_shape, 2)
    with running_server(tmp_path, {"flaky": flaky}, max_batch=3, batch_wait_ms=0) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            # The three start as one batch (which fails), however far apart they arrive; the retries
            # run alone, so they need no window.
            with full_batches_only(app):
                ids = [client.post("/v1/videos", json={**BODY, "seed": i}).json()["id"] for i in range(2)]
                poison = client.post("/v1/videos", json={**BODY, "prompt": "poison apple"}).json()["id"]
                jobs = [wait_for(client, i) for i in ids]
            assert [j["status"] for j in jobs] == ["completed", "completed"]
            assert [j["batch_size"] for j in jobs] == [1, 1]
            failed = wait_for(client, poison)
            assert failed["status"] == "failed"
            assert failed["error"] == {"code": "generation_error", "message": "RuntimeError: poisoned prompt"}
            # The worker keeps serving.
            assert wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])["status"] == "completed"
            assert app.state.runtime.engine.alive


def test_a_stop_whose_grace_runs_out_mid_batch_leaves_no_engine_thread_running(hosted_wan, tmp_path):
    """A thread still inside torch when the process exits aborts the exit ("terminate called without an
    active exception"): past the grace the batch is dropped at its next step, and stop waits for that."""
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, shutdown_grace_s=0.0) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            job = client.post("/v1/videos", json={"prompt": "p", "size": "32x32", "num_frames": 9,
                                                  "num_inference_steps": 400}).json()
            until(lambda: client.get(f"/v1/videos/{job['id']}").json()["progress"] > 0, "the job mid-run")
        engine = app.state.runtime.engine
    assert engine.finished
    assert app.state.runtime.store.get(job["id"]).status == "in_progress"  # re-queued at the next start
