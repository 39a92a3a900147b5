"""Steering video-to-video rows (tiny Wan text-to-video): reward gradients, a judge's gradient and
best-of-N on a row that starts part-way down its schedule. Its guidance window is in noise levels, so
a row starting at sigma s is guided only where the window lies below s."""


from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import test_video
from tests.guidance.untrained import family_and_reward_fixtures

SHAPE = VideoShape(height=32, width=32, frames=9)
STEPS = 6
STRENGTH = 0.5  # 3 of 6 steps run, from the 4th sigma of the full schedule
PROMPT = "a green square moving right"


wan, reward = family_and_reward_fixtures("wan", "wan")


def _spec(guidance=None, seed=3, video_seed=0, strength=STRENGTH):
    return SampleSpec(PROMPT, seed=seed, cfg_scale=3.0, guidance=guidance, video=test_video(video_seed, SHAPE),
                      denoise_strength=strength)


def _start_level(wan) -> float:
    return wan.schedule(STEPS, SHAPE).noise_levels[STEPS - int(STEPS * STRENGTH)]


def test_reward_gradient_guidance_raises_the_objective_of_a_v2v_row(wan, reward):
    unguided = sample(wan, [_spec()], SHAPE, STEPS, reward)
    finals = [sample(wan, [_spec(GuidanceSpec({"a": 1.0}, strength=s, window=(0.0, 1.0), mode="sum"))], SHAPE,
                     STEPS, reward).rewards[0, 0].item() for s in (20.0, 80.0)]
    assert unguided.rewards[0, 0].item() < finals[0] < finals[1], (unguided.rewards[0, 0].item(), finals)
    # Guided beside a text-to-video row that runs every step, each row is as alone.
    guided = _spec(GuidanceSpec({"a": 1.0}, strength=80.0, window=(0.0, 1.0), mode="sum"))
    text = SampleSpec(PROMPT, seed=9, cfg_scale=3.0)
    together = sample(wan, [text, guided], SHAPE, STEPS, reward)
    assert (together.frames[1] - sample(wan, [guided], SHAPE, STEPS, reward).frames[0]).abs().max() <= 1e-4
    assert (together.frames[0] - sample(wan, [text], SHAPE, STEPS, reward).frames[0]).abs().max() <= 1e-4
    assert together.denoiser_passes == [STEPS, STEPS // 2]


def test_the_window_is_in_noise_levels_so_a_v2v_row_sees_only_its_part_below_its_start(wan, reward):
    """Every one of its steps is guided by a window [0, 1]; none by a window above its start, which leaves it
    the unguided row to the bit."""
    start = _start_level(wan)
    full = sample(wan, [_spec(GuidanceSpec({"a": 1.0}, strength=40.0, window=(0.0, 1.0), mode="sum"))], SHAPE,
                  STEPS, reward)
    assert full.guided_steps == [STEPS // 2]
    above = GuidanceSpec({"a": 1.0}, strength=40.0, window=(min(1.0, start + 0.01), 1.0), mode="sum")
    unguided = sample(wan, [_spec()], SHAPE, STEPS, reward)
    out = sample(wan, [_spec(above)], SHAPE, STEPS, reward)
    assert out.guided_steps == [0] and (out.latents - unguided.latents).abs().max() == 0


def test_best_of_n_on_a_v2v_row_keeps_the_particle_the_reward_ranks_first(wan, reward):
    unguided = sample(wan, [_spec()], SHAPE, STEPS, reward)
    search = GuidanceSpec({"a": 1.0}, mode="best_of_n", particles=4, window=(0.0, 1.0))
    best = sample(wan, [_spec(search)], SHAPE, STEPS, reward)
    assert best.rewards[0, 0] >= unguided.rewards[0, 0] - 1e-4
    assert best.denoiser_passes[0] > STEPS // 2 and best.guided_steps == [0]
    # Its first particle is the unguided sample of its seed: the particles share the video, not the noise.
    worst = sample(wan, [_spec(GuidanceSpec({"a": -1.0}, mode="best_of_n", particles=4, window=(0.0, 1.0)))],
                   SHAPE, STEPS, reward)
    assert worst.rewards[0, 0] <= best.rewards[0, 0] and (worst.latents - best.latents).abs().max() > 1e-3
    together = sample(wan, [SampleSpec(PROMPT, seed=9), _spec(search)], SHAPE, STEPS, reward)
    assert (together.frames[1] - best.frames[0]).abs().max() <= 1e-4


def test_a_judges_gradient_steers_a_v2v_row(wan):
    from guidance.judges.as_reward import JudgeReward
    from guidance.judges.classic import ClassicJudge

    judge = ClassicJudge(("exposure",))

    def spec(weight):
        guidance = None if weight == 0 else GuidanceSpec({"exposure": weight}, 10.0, (0.0, 1.0), "relative")
        return _spec(guidance, seed=2)

    out = sample(wan, [spec(0), spec(1.0), spec(-1.0)], SHAPE, STEPS, JudgeReward(wan, judge))
    unguided, up, down = judge.score(out.frames, [PROMPT] * 3)[:, 0].tolist()
    assert up > unguided + 1e-5 and down < unguided - 1e-5, (unguided, up, down)
    assert out.guided_steps == [0, STEPS // 2, STEPS // 2]
