"""The typed request: its batch key, its sample, and its record in the store (no torch, no server)."""

import subprocess
import sys
from dataclasses import replace

import pytest

from guidance.nrg import GuidanceSpec
from server.job_spec import INPUT_REFERENCE_KEY, BatchKey, CheckpointRef, InputReference, JobSpec

SPEC = JobSpec(model="m", prompt="a red ball", width=64, height=48, num_frames=9, fps=8, seed=7,
               num_inference_steps=4, guidance_scale=5.0)
VIDEO = InputReference(INPUT_REFERENCE_KEY, "ab" * 32, "video/mp4", 64, 48, 1000, frames=30, fps=8.0)
IMAGE = InputReference(INPUT_REFERENCE_KEY, "cd" * 32, "image/png", 64, 48, 500)


def test_the_step_count_is_part_of_the_key_only_when_samples_step_together():
    other_steps = replace(SPEC, num_inference_steps=8)
    assert SPEC.batch_key() == other_steps.batch_key()
    assert SPEC.batch_key(step_together=True) != other_steps.batch_key(step_together=True)
    assert SPEC.batch_key() == BatchKey("m", None, 64, 48, 9, None)


def test_a_lora_job_shares_the_base_models_batches_and_a_full_weight_one_does_not():
    lora = replace(SPEC, checkpoint=CheckpointRef("dpo", "lora", 0.5))
    full = replace(SPEC, checkpoint=CheckpointRef("sft", "full"))
    assert lora.batch_key() == SPEC.batch_key()
    assert full.batch_key().weights == "sft" and full.batch_weights == "sft"
    assert lora.to_sample_spec().lora == "dpo" and lora.to_sample_spec().lora_scale == 0.5
    assert full.to_sample_spec().lora is None


def test_a_search_job_takes_a_row_per_particle_and_a_judge_steered_one_has_its_own_batches():
    search = replace(SPEC, guidance=GuidanceSpec({"vq": 1.0}, 1.0, (0.2, 0.8), "best_of_n", 3))
    judged = replace(search, judge="clip")
    assert search.rows == 3 and SPEC.rows == 1
    assert replace(search, guidance=GuidanceSpec({"vq": 1.0}, 1.0, (0.2, 0.8), "sum", 3)).rows == 1
    assert judged.batch_key() != search.batch_key()


def test_a_judge_steers_search_and_gradient_modes_but_needs_guidance():
    gradient = replace(SPEC, guidance=GuidanceSpec({"vq": 1.0}, 1.0, (0.2, 0.8), "relative"), judge="clip")
    assert gradient.rows == 1 and gradient.batch_key().judge == "clip"
    with pytest.raises(ValueError, match="reward_guidance.judge steers reward_guidance"):
        replace(SPEC, judge="clip")


def test_an_unguided_twin_is_one_more_row_and_needs_active_guidance():
    guided = replace(SPEC, guidance=GuidanceSpec({"vq": 1.0}, 1.0, (0.2, 0.8), "relative"), compare_unguided=True)
    particles = replace(guided, guidance=GuidanceSpec({"vq": 1.0}, 1.0, (0.2, 0.8), "fk", 3))
    assert guided.rows == 2 and particles.rows == 4 and guided.batch_key() == SPEC.batch_key()
    for inactive in (None, GuidanceSpec({"vq": 1.0}, 0.0, (0.2, 0.8), "relative")):
        with pytest.raises(ValueError, match="compare_unguided needs active reward_guidance"):
            replace(SPEC, guidance=inactive, compare_unguided=True)

    with pytest.raises(ValueError, match="checkpoint_scale applies to LoRA"):
        CheckpointRef("sft", "full", 0.5)
    with pytest.raises(ValueError, match="checkpoint kind"):
        CheckpointRef("sft", "merged")


@pytest.mark.parametrize("spec", [
    SPEC,
    replace(SPEC, negative_prompt="blur", checkpoint=CheckpointRef("dpo", "lora", 0.5), judges=("truth", "clip"),
            guidance=GuidanceSpec({"vq": 1.0, "mq": -0.5}, 30.0, (0.1, 0.9), "sum")),
    replace(SPEC, checkpoint=CheckpointRef("sft", "full"), judge="clip",
            guidance=GuidanceSpec({"ta": 1.0}, 1.0, (0.0, 1.0), "fk", 6)),
    replace(SPEC, judge="clip", guidance=GuidanceSpec({"ta": 1.0}, 3.0, (0.2, 0.8), "relative")),
    replace(SPEC, webhook_url="https://hooks.example.com/nrg?token=abc"),
    replace(SPEC, input_reference=IMAGE),
    replace(SPEC, input_reference=VIDEO, denoise_strength=0.6),
    replace(SPEC, guidance=GuidanceSpec({"vq": 1.0}, 2.0, (0.2, 0.8), "relative"), compare_unguided=True),
])
def test_the_store_record_reads_back_as_the_same_spec(spec):
    import json

    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_a_record_written_before_checkpoint_kinds_were_stored_reads_its_kind_from_the_scale():
    record = {**SPEC.to_json(), "checkpoint": "dpo", "checkpoint_scale": 0.5}
    del record["checkpoint_kind"]
    assert JobSpec.from_json(record).checkpoint == CheckpointRef("dpo", "lora", 0.5)
    assert JobSpec.from_json({**record, "checkpoint_scale": None}).checkpoint == CheckpointRef("dpo", "full")


def test_a_record_written_before_webhooks_has_none():
    record = {k: v for k, v in replace(SPEC, webhook_url="https://h.example/").to_json().items() if k != "webhook_url"}
    assert JobSpec.from_json(record) == SPEC and SPEC.webhook_url is None


def test_a_video_job_runs_the_tail_of_its_schedule_and_steps_with_jobs_of_its_start():
    """Video-to-video: int(steps * strength) steps from the start; where samples step together (static
    batching, multistep schedulers) the start is part of the key, as the step count is."""
    v2v = replace(SPEC, num_inference_steps=10, input_reference=VIDEO, denoise_strength=0.7)
    assert (v2v.start_step, v2v.denoise_steps) == (3, 7) and (SPEC.start_step, SPEC.denoise_steps) == (0, 4)
    assert v2v.to_sample_spec().denoise_strength == 0.7
    same_steps = replace(SPEC, num_inference_steps=10)
    assert v2v.batch_key() == same_steps.batch_key()
    assert v2v.batch_key(step_together=True) != same_steps.batch_key(step_together=True)
    assert v2v.batch_key(step_together=True) == replace(v2v, denoise_strength=0.75).batch_key(step_together=True)
    assert IMAGE.to_json().keys() == {"key", "sha256", "media_type", "width", "height", "bytes"}
    for bad in (SPEC, replace(SPEC, input_reference=IMAGE)):
        with pytest.raises(ValueError, match="denoise_strength applies to video-to-video"):
            replace(bad, denoise_strength=0.5)


def test_a_record_written_before_unguided_twins_has_none():
    record = {k: v for k, v in SPEC.to_json().items() if k != "compare_unguided"}
    assert JobSpec.from_json(record) == SPEC and not SPEC.compare_unguided


def test_the_request_types_import_without_torch():
    """The policy and the API process read specs; neither needs torch to do so."""
    code = "import sys, server.job_spec; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
