"""``nrg eval --diagnose``: does a reward model's gradient point where the ground truth's does?

A reward model can rank pairs well and still steer badly: guidance follows its input gradient, not
its ranking. On the demo world the truth has a differentiable stand-in (``oracle.OracleReward``), so
the gradient can be checked directly. For unguided samples of the model, forward-noised to each
noise level t (``family.add_noise``, fixed noise per clip), this measures per objective k:

- ``cos(grad r_k, grad oracle_k)``: alignment with the truth (random directions give ~0, +-1/sqrt(n));
- ``cos(grad r_k, grad r_l)`` for k != l, and the same for the oracle: whether weights can select an
  objective at all (if every objective's gradient is the same direction, they cannot).

Means over clips, with the standard error of the mean, per t.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.rewards import RewardFunction
from guidance.train.reward import PromptCache

#: Noise levels the diagnostic looks at (the default guidance window is [0.2, 0.8]).
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
NOISE_SEED = 424_242


def input_gradients(reward: RewardFunction, latents: torch.Tensor, t: torch.Tensor, cond, shape: VideoShape
                    ) -> torch.Tensor:
    """Per objective, the gradient of each clip's score with respect to its latents: [B, K, N]."""
    x = latents.detach().float().requires_grad_(True)
    with torch.enable_grad():
        scores = reward(x, t, cond.detach(), shape).float()
        grads = [torch.autograd.grad(scores[:, k].sum(), x, retain_graph=k < scores.shape[1] - 1)[0]
                 for k in range(scores.shape[1])]
    return torch.stack(grads, dim=1).flatten(2)


def _mean_sem(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    sem = float(values.std() / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), sem


def gradient_report(
    family: PipelineFamily,
    reward: RewardFunction,
    oracle: RewardFunction,
    clean: torch.Tensor,
    prompts: Sequence[str],
    shape: VideoShape,
    levels: Sequence[float] = LEVELS,
) -> dict:
    """The measurements of the module docstring for clean latents ``clean`` [B, ...] of ``prompts``."""
    objectives = list(oracle.objectives)
    columns = [list(reward.objectives).index(o) for o in objectives]
    cond = PromptCache(family)(list(prompts))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(NOISE_SEED)).to(clean.device)
    report: dict = {"clips": int(clean.shape[0]), "objectives": objectives, "levels": []}
    for level in levels:
        t = torch.full((clean.shape[0],), float(level), device=clean.device)
        x_t = family.add_noise(clean, noise, t)
        g_model = input_gradients(reward, x_t, t, cond, shape)[:, columns]
        g_true = input_gradients(oracle, x_t, t, cond, shape)
        cos = torch.nn.functional.cosine_similarity
        entry = {"t": float(level),
                 "cosine_with_oracle": {o: _mean_sem(cos(g_model[:, k], g_true[:, k], dim=-1))
                                        for k, o in enumerate(objectives)},
                 "model_cross": {}, "oracle_cross": {}}
        for (k, a), (l, b) in itertools.combinations(enumerate(objectives), 2):
            entry["model_cross"][f"{a}-{b}"] = _mean_sem(cos(g_model[:, k], g_model[:, l], dim=-1))
            entry["oracle_cross"][f"{a}-{b}"] = _mean_sem(cos(g_true[:, k], g_true[:, l], dim=-1))
        report["levels"].append(entry)
    return report


def format_gradient_report(report: dict) -> str:
    """A markdown table: cosine with the oracle per objective, and the cross-objective cosines."""
    objectives = report["objectives"]
    pairs = list(report["levels"][0]["model_cross"])
    head = ("| t | " + " | ".join(f"cos {o} vs oracle" for o in objectives) + " | "
            + " | ".join(f"model {p}" for p in pairs) + " | " + " | ".join(f"oracle {p}" for p in pairs) + " |")
    lines = [head, "|" + "---|" * (1 + len(objectives) + 2 * len(pairs))]
    cell = lambda ms: f"{ms[0]:+.3f} ± {ms[1]:.3f}"  # noqa: E731
    for entry in report["levels"]:
        lines.append(f"| {entry['t']:.1f} | " + " | ".join(cell(entry["cosine_with_oracle"][o]) for o in objectives)
                     + " | " + " | ".join(cell(entry["model_cross"][p]) for p in pairs)
                     + " | " + " | ".join(cell(entry["oracle_cross"][p]) for p in pairs) + " |")
    lines += ["", f"{report['clips']} clips (unguided samples, forward-noised to t with fixed noise); mean ± standard "
              "error over clips. A random direction has cosine ~0 ± 1/sqrt(latent size)."]
    return "\n".join(lines)


def run_diagnostic(model=None, reward=None, seeds: int = 4, steps: int | None = None, device: str = "cpu",
                   levels: Sequence[float] = LEVELS) -> dict:
    """Sample the held-out prompts unguided on tuning seeds and measure :func:`gradient_report`."""
    from demo_world import world
    from demo_world.evaluate import TUNE_SEED_BASE
    from demo_world.oracle import OracleReward
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    reward_model = load_reward_model(reward or DEFAULT_REWARD_DIR, family)
    oracle = OracleReward(family)
    missing = [o for o in oracle.objectives if o not in reward_model.objectives]
    if missing:
        raise ValueError(f"the reward model lacks objective(s) {missing}; it has {list(reward_model.objectives)}")
    items = [(p.text, TUNE_SEED_BASE + j) for j in range(seeds) for p in world.eval_prompts()]
    out = sample(family, [SampleSpec(text, seed=seed) for text, seed in items], DEFAULT_SHAPE,
                 steps or DEFAULT_STEPS)
    report = gradient_report(family, reward_model, oracle, out.latents, [text for text, _ in items], DEFAULT_SHAPE,
                             levels)
    report.update(model=str(model or DEFAULT_MODEL_DIR), reward=str(reward or DEFAULT_REWARD_DIR),
                  seeds=[items[0][1], items[-1][1]])
    return report
