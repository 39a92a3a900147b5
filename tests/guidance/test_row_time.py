"""Measured seconds per sample (``guidance.row_time``): how each timed call is split between the rows it
served, and what the steppable batch charges. Never a time: only the splits, sums and orderings that hold
however busy the machine is."""

import pytest
import torch

from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.row_time import RowClock, RowSeconds
from guidance.sampler import SampleSpec

SHAPE = VideoShape(height=32, width=32, frames=9)
PROMPT = "a green square moving right"
STEPS = 4


def _halves(latents, t, prompt_embeds):
    flat = latents.float()
    return torch.stack([flat[:, :8].mean(dim=(1, 2, 3, 4)), flat[:, 8:].mean(dim=(1, 2, 3, 4))], dim=1)


REWARD = CallableReward(_halves, ["a", "b"])


def test_a_call_is_split_evenly_between_its_rows_and_one_rows_share_is_the_reference():
    clock = RowClock(torch.device("cpu"))
    # Sample p has two particle rows in this denoiser call, u one: p is charged 2/3, each 1/3 as reference.
    with clock.charge(["p", "u", "p"], {"p": 2, "u": 1}):
        torch.randn(64, 64) @ torch.randn(64, 64)
    p, u = clock.take(["p", "u"])
    assert p.total == pytest.approx(2 * u.total) and u.total > 0
    assert p.unguided == pytest.approx(u.unguided) == pytest.approx(u.total)
    assert u.vs_unguided == pytest.approx(1.0) and p.vs_unguided == pytest.approx(2.0)


def test_guidance_work_raises_the_total_only_and_dropped_samples_are_forgotten():
    clock = RowClock(torch.device("cpu"))
    with clock.charge(["g", "u"], {"g": 1, "u": 1}):
        torch.randn(64, 64) @ torch.randn(64, 64)
    with clock.charge(["g"]):  # a reward chunk's forward and backward: guidance alone does it
        torch.randn(64, 64) @ torch.randn(64, 64)
    with clock.charge(["gone"], {"gone": 1}):
        pass
    clock.drop(["gone"])
    timed = clock.timed_s
    g, u, gone = clock.take(["g", "u", "gone"])
    assert g.unguided == pytest.approx(u.unguided) == pytest.approx(u.total)
    assert g.total > g.unguided and g.vs_unguided > 1
    assert gone == RowSeconds() and gone.vs_unguided is None
    assert g.total + u.total <= timed


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_the_batch_charges_every_timed_call_to_its_rows(wan, batch_invariant):
    """Unguided: exactly its reference. Gradient-guided: its reward backward on top. Particles: several rows'
    shares of every denoiser call until the pruning. And the samples' totals add up to what was timed."""
    batch = BatchState(wan, SHAPE, REWARD, batch_invariant=batch_invariant)
    window = dict(window=(0.0, 1.0))
    specs = [SampleSpec(PROMPT, seed=1, cfg_scale=3.0),
             SampleSpec(PROMPT, seed=2, cfg_scale=3.0, guidance=GuidanceSpec({"a": 1.0}, 2.0, **window)),
             SampleSpec(PROMPT, seed=3, cfg_scale=1.0, guidance=GuidanceSpec({"a": 1.0}, mode="best_of_n",
                                                                              particles=3, **window))]
    batch.add(specs, STEPS, ["unguided", "gradient", "particles"])
    while not batch.finished():
        batch.step()
    result = batch.pop_finished()
    seconds = dict(zip(result.ids, result.row_seconds))
    assert seconds["unguided"].vs_unguided == pytest.approx(1.0)
    assert seconds["gradient"].vs_unguided > 1.0
    # 3 particles until the pruning at mid-window, then 1: more than one row's share of the denoiser calls.
    assert seconds["particles"].vs_unguided > 1.0
    assert result.denoiser_passes[:2] == [STEPS, STEPS] and result.denoiser_passes[2] > STEPS
    assert sum(s.total for s in result.row_seconds) == pytest.approx(batch.clock.timed_s)


def test_a_cancelled_sample_leaves_the_clock(wan):
    batch = BatchState(wan, SHAPE, REWARD)
    batch.add([SampleSpec(PROMPT, seed=1), SampleSpec(PROMPT, seed=2)], STEPS, ["kept", "cancelled"])
    batch.step()
    batch.remove(["cancelled"])
    while not batch.finished():
        batch.step()
    result = batch.pop_finished()
    assert result.ids == ["kept"] and result.row_seconds[0].vs_unguided == pytest.approx(1.0)
    assert batch.clock.take(["cancelled"]) == [RowSeconds()]
