"""The steppable batch: staggered joins, mixed step counts, leaving, and what each step computes."""

import pytest
import torch

from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.sampler import SampleSpec, sample

SHAPE = VideoShape(height=32, width=32, frames=9)
PROMPT = "a green square moving right"


def _halves(latents, t, prompt_embeds):
    flat = latents.float()
    return torch.stack([flat[:, :8].mean(dim=(1, 2, 3, 4)), flat[:, 8:].mean(dim=(1, 2, 3, 4))], dim=1)


class CountingReward(CallableReward):
    """Records the batch size of every call made with gradients on (the guidance's backward passes)."""

    def __init__(self):
        super().__init__(_halves, ["a", "b"])
        self.grad_batches: list[int] = []

    def __call__(self, latents, t, cond, shape):
        if torch.is_grad_enabled() and latents.requires_grad:
            self.grad_batches.append(latents.shape[0])
        return super().__call__(latents, t, cond, shape)


REWARD = CallableReward(_halves, ["a", "b"])


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


def _run_staggered(family, arrivals, reward=REWARD):
    """``arrivals``: (join_before_step, id, spec, steps). Returns {id: frames} and each pop's ids."""
    batch = BatchState(family, SHAPE, reward)
    frames, pops, step = {}, [], 0
    pending = sorted(arrivals, key=lambda a: a[0])
    while pending or batch:
        while pending and pending[0][0] <= step:
            _, sid, spec, steps = pending.pop(0)
            batch.add([spec], steps, [sid])
        batch.step()
        step += 1
        if batch.finished():
            result = batch.pop_finished()
            pops.append(result.ids)
            frames.update(zip(result.ids, result.frames))
    return frames, pops


def test_staggered_arrivals_match_each_sample_alone(wan):
    """Joining late, with other step counts, CFG scales, weights and modes, changes no sample's output."""
    arrivals = [
        (0, "a", SampleSpec(PROMPT, seed=5, cfg_scale=4.0, guidance=GuidanceSpec({"a": 1.0}, strength=2.0)), 6),
        (1, "b", SampleSpec("a red circle moving up", seed=6, cfg_scale=1.0), 4),
        (2, "c", SampleSpec(PROMPT, seed=7, cfg_scale=3.0,
                            guidance=GuidanceSpec({"b": 1.0}, 20.0, window=(0.0, 1.0), mode="sum")), 5),
        (2, "d", SampleSpec(PROMPT, seed=8, cfg_scale=3.0,
                            guidance=GuidanceSpec({"a": 1.0}, 10.0, mode="fk", particles=3)), 6),
        (4, "e", SampleSpec("a blue triangle", seed=9, cfg_scale=2.0,
                            guidance=GuidanceSpec({"a": 1.0, "b": 1.0}, 50.0, mode="unit")), 3),
    ]
    frames, pops = _run_staggered(wan, arrivals)
    assert pops == [["b"], ["a"], ["c", "e"], ["d"]]  # after steps 5, 6, 7 and 8 of the batch
    for _, sid, spec, steps in arrivals:
        alone = sample(wan, [spec], SHAPE, steps, REWARD).frames[0]
        assert (frames[sid] - alone).abs().max().item() <= 1e-4, sid


def test_reward_gradients_only_for_the_rows_guided_at_this_step(wan):
    reward = CountingReward()
    batch = BatchState(wan, SHAPE, reward, reward_chunk_rows=4)  # one reward call per step shows its rows
    specs = [SampleSpec(PROMPT, seed=s, guidance=GuidanceSpec({"a": 1.0}) if s % 2 else None) for s in range(4)]
    batch.add(specs, 6, range(4))
    reports = [batch.step() for _ in range(6)]
    guided_steps = sum(1 for report in reports if report[1].rewards is not None)
    assert 0 < guided_steps < 6  # the default window [0.2, 0.8] leaves some steps out
    assert reward.grad_batches == [2] * guided_steps
    assert all(r[0].rewards is None and r[2].rewards is None for r in reports)
    result = batch.pop_finished(decode=False)
    assert result.ids == [0, 1, 2, 3] and result.guided_steps == [0, guided_steps, 0, guided_steps]


def test_cancelled_rows_leave_at_once_and_slots_refill(wan):
    batch = BatchState(wan, SHAPE, REWARD)
    batch.add([SampleSpec(PROMPT, seed=s) for s in (1, 2)], 4, ["x", "y"])
    batch.step()
    assert batch.remove(["y", "nope"]) == ["y"]
    assert batch.ids == ["x"] and batch.rows_in_use == 1
    batch.add([SampleSpec(PROMPT, seed=2)], 3, ["y2"])
    for _ in range(3):
        batch.step()
    result = batch.pop_finished()
    assert sorted(result.ids) == ["x", "y2"] and not batch
    alone = sample(wan, [SampleSpec(PROMPT, seed=2)], SHAPE, 3).frames[0]
    assert (result.frames[result.ids.index("y2")] - alone).abs().max().item() <= 1e-4


def test_misuse_is_a_clear_error(wan):
    batch = BatchState(wan, SHAPE, REWARD)
    with pytest.raises(ValueError, match="the batch is empty"):
        batch.step()
    batch.add([SampleSpec(PROMPT)], 1, ["a"])
    with pytest.raises(ValueError, match="already in the batch"):
        batch.add([SampleSpec(PROMPT)], 1, ["a"])
    with pytest.raises(ValueError, match="one distinct id per sample"):
        batch.add([SampleSpec(PROMPT), SampleSpec(PROMPT)], 1, ["b", "b"])
    with pytest.raises(ValueError, match="sample 0: weights: unknown objective 'z'"):
        batch.add([SampleSpec(PROMPT, guidance=GuidanceSpec({"z": 1.0}))], 1, ["c"])
    batch.step()
    with pytest.raises(ValueError, match="must leave"):
        batch.step()
    assert batch.pop_finished(decode=False).ids == ["a"] and not batch


def test_multistep_scheduler_batches_start_together(tiny_family):
    """CogVideoX's scheduler keeps batched history: no joining, and a cancelled sample rides to the end."""
    family = tiny_family("cogvideox")
    shape = VideoShape(height=32, width=32, frames=9)
    batch = BatchState(family, shape)
    specs = [SampleSpec(PROMPT, seed=s, cfg_scale=3.0) for s in (1, 2)]
    batch.add(specs, 3, [0, 1])
    batch.step()
    with pytest.raises(ValueError, match="batches start together"):
        batch.add([SampleSpec(PROMPT)], 3, [2])
    batch.remove([1])
    assert batch.rows_in_use == 2
    batch.step()
    batch.step()
    result = batch.pop_finished()
    assert result.ids == [0]
    alone = sample(family, specs[:1], shape, 3).frames[0]
    assert (result.frames[0] - alone).abs().max().item() <= 1e-4


def test_batch_invariant_makes_a_sample_independent_of_its_batch_bit_for_bit(tiny_family):
    from guidance.reward_model import init_reward_model

    family = tiny_family("wan")
    reward = init_reward_model(family, ["vq", "mq"], num_blocks=1, seed=0)
    shape = VideoShape(height=32, width=32, frames=5)
    specs = [SampleSpec("a red ball", seed=1, guidance=GuidanceSpec({"vq": 1.0}, 8.0, (0.0, 1.0))),
             SampleSpec("a cat", seed=2, cfg_scale=2.0),
             SampleSpec("a car", seed=3, guidance=GuidanceSpec({"mq": 1.0}, 1.0, (0.0, 1.0), "best_of_n", 2))]

    def run(batch_specs):
        batch = BatchState(family, shape, reward, batch_invariant=True)
        batch.add(batch_specs, 4, range(len(batch_specs)))
        for _ in range(4):
            batch.step()
        return batch.pop_finished()

    together = run(specs)
    for i, spec in enumerate(specs):
        alone = run([spec])
        assert torch.equal(alone.latents[0], together.latents[i]) and torch.equal(alone.frames[0], together.frames[i])


def test_batch_invariant_gives_every_model_and_every_fused_step_one_row(tiny_family, monkeypatch):
    """Bits equal on this machine are not enough: a BLAS on another CPU may round a batch of four prompts
    differently from one, so no call a row's numbers come from may see two rows."""
    import guidance.batch_state as batch_state
    from guidance.reward_model import init_reward_model

    family = tiny_family("wan")
    reward = init_reward_model(family, ["vq", "mq"], num_blocks=1, seed=0)
    shape = VideoShape(height=32, width=32, frames=5)
    seen: dict[str, set[int]] = {}

    def spy(name, fn, rows_of):
        def call(*args, **kwargs):
            seen.setdefault(name, set()).add(rows_of(*args, **kwargs))
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(family, "encode_prompts", spy("text", family.encode_prompts, lambda p, n: len(p)))
    monkeypatch.setattr(family, "predict", spy("denoiser", family.predict, lambda m, x, *a: x.shape[0]))
    monkeypatch.setattr(family, "decode", spy("decoder", family.decode, lambda x, *a: x.shape[0]))
    monkeypatch.setattr(reward, "forward", spy("reward", reward.forward, lambda x, *a, **k: x.shape[0]))
    monkeypatch.setattr(batch_state, "guided_step", spy("step", batch_state.guided_step, lambda p, *a, **k: p.shape[0]))
    batch = BatchState(family, shape, reward, batch_invariant=True)
    batch.add([SampleSpec("a red ball", seed=1, guidance=GuidanceSpec({"vq": 1.0}, 8.0, (0.0, 1.0))),
               SampleSpec("a cat", seed=2, cfg_scale=2.0, negative_prompt="blur"),
               SampleSpec("a car", seed=3, guidance=GuidanceSpec({"mq": 1.0}, 1.0, (0.0, 1.0), "best_of_n", 2)),
               SampleSpec("a dog", seed=4, guidance=GuidanceSpec({"vq": 1.0, "mq": 1.0}, 2.0, (0.0, 1.0), "sum"))],
              3, range(4))
    for _ in range(3):
        batch.step()
    batch.pop_finished()
    assert seen == {name: {1} for name in ("text", "denoiser", "decoder", "reward", "step")}
