"""Training the latent reward model on preference pairs (``nrg train-reward``).

Loss: Bradley-Terry with ties (as VideoReward trains its reward model), theta = 5, per objective. With
d = r_A - r_B and c = log theta::

    P(A > B) = sigmoid(d - c)
    P(B > A) = sigmoid(-d - c)
    P(tie)   = (theta^2 - 1) sigmoid(d - c) sigmoid(-d - c)        (the three sum to 1)
    loss     = - log P(observed label)

averaged over the non-missing labels of each objective in the minibatch, then over the objectives
that have labels in it (so every objective weighs the same, whatever its label density).

Noisy pairs: every step draws one t ~ U(t_min, t_max) per pair and ONE noise tensor
per pair; both clips of the pair are noised with that same noise at that same t
(``family.add_noise``), so the score difference reflects the clips, not the noise draw. Scores are
r = model(x_t, t, prompt embeddings, shape); an image-to-video pair's conditioning also carries its
image's (``family.encode_images``, as a served job's does), and the latents the image holds fixed
(LTX-Video's first frame) are left clean, as the sampler leaves them.

Sampler states (``trajectory_share`` P > 0): forward-noising a final latent gives an x_t the sampler
never visits (its states are the denoiser's own, not data plus fresh noise), yet guidance queries the
reward on the sampler's states only. For pairs whose files record the states their clips passed
through (``trajectory`` in the data format), a share P of them per step is replaced by one recorded
state, the same step for both clips (so the same t), labelled by the final clips' preference: the
reward learns to rank the states it will be asked about by the outcome they lead to.

What is trained: the trunk's transformer blocks and the head. The trunk's patch, time and text
embeddings (everything of the copied transformer outside its first block list) stay frozen: they are
the interface to the pipeline's latent space, noise-level embedding and text encoder, which the
reward model must keep speaking; with a few thousand pairs, retraining them would only overfit.
``freeze_trunk`` freezes the blocks too (head only: a linear probe with attention pooling).

Evaluation: on the held-out pairs, at the midpoints of four noise-level buckets, with fixed noise
(pair i gets noise from seed ``EVAL_SEED + i``), so numbers are reproducible and comparable between
epochs; and, for held-out pairs with recorded states, on the state nearest each bucket's midpoint
(the accuracy where guidance asks). Accuracy counts decisive labels only (sign of r_A - r_B against A/B); ties are counted
separately (with the share of ties where P(tie) is the most probable outcome).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.images import fit_image, read_image
from guidance.reward_model import LatentRewardModel, init_reward_model, load_reward_model, read_reward_config
from guidance.train.preference_data import A_WINS, B_WINS, MISSING, TIE, PreferenceData

THETA = 5.0
#: Noise-level buckets of the held-out evaluation; each is evaluated at its midpoint.
BUCKETS: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
#: Held-out pair i is noised with ``torch.Generator().manual_seed(EVAL_SEED + i)``.
EVAL_SEED = 1_000_003
#: The seed of what a family draws at random for a pair's image conditioning (CogVideoX's posterior sample).
IMAGE_SEED = 0
REPORT_NAME = "training_report.json"


# -- the loss ----------------------------------------------------------------------------------


def bt_ties_log_probs(d: torch.Tensor, theta: float = THETA) -> torch.Tensor:
    """log P(A > B), log P(B > A), log P(tie) of score differences ``d = r_A - r_B``: [..., 3]."""
    if not theta > 1.0:
        raise ValueError(f"theta must be > 1; got {theta}")
    c = math.log(theta)
    d = d.float()
    log_a = nn.functional.logsigmoid(d - c)
    log_b = nn.functional.logsigmoid(-d - c)
    log_tie = math.log(theta * theta - 1.0) + log_a + log_b
    return torch.stack([log_a, log_b, log_tie], dim=-1)


def bt_ties_loss(d: torch.Tensor, labels: torch.Tensor, theta: float = THETA) -> torch.Tensor:
    """Mean - log P(label) of ``d`` [N, K] against ``labels`` [N, K] (0 A, 1 B, 2 tie, -1 missing):
    averaged over each objective's non-missing labels, then over objectives that have any."""
    if d.shape != labels.shape:
        raise ValueError(f"scores {tuple(d.shape)} and labels {tuple(labels.shape)} differ in shape")
    log_probs = bt_ties_log_probs(d, theta)
    present = labels != MISSING
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * present
    counts = present.sum(dim=0)
    has = counts > 0
    if not bool(has.any()):
        raise ValueError("no labels: every label of the batch is missing")
    per_objective = nll.sum(dim=0)[has] / counts[has]
    return per_objective.mean()


# -- noisy pairs -------------------------------------------------------------------------------


def augment_pair(x_a: torch.Tensor, x_b: torch.Tensor, std: float, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both noisy clips of each pair plus one Gaussian draw of ``std`` times the pair's RMS.

    The reward model is trained to score a neighbourhood of each state rather than the state alone,
    which smooths its input gradient (randomised smoothing); sharing the draw keeps the pair's
    difference about the clips."""
    xi = torch.randn(x_a.shape, generator=generator).to(x_a.device, x_a.dtype)
    view = (-1,) + (1,) * (x_a.ndim - 1)
    rms = torch.cat([x_a, x_b], dim=1).float().pow(2).flatten(1).mean(1).sqrt().view(view).to(x_a.dtype)
    return x_a + std * rms * xi, x_b + std * rms * xi


def noise_pair(
    family: PipelineFamily, a: torch.Tensor, b: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both clips of each pair noised with the same ``noise`` at the same ``t`` ([B])."""
    return family.add_noise(a, noise, t), family.add_noise(b, noise, t)


def draw_noisy_pairs(
    family: PipelineFamily,
    a: torch.Tensor,
    b: torch.Tensor,
    generator: torch.Generator,
    t_min: float = 0.0,
    t_max: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One t ~ U(t_min, t_max) and one noise tensor per pair, drawn on the CPU from ``generator``
    (so a seed gives the same draws on any device): returns (x_t^A, x_t^B, t, noise)."""
    if a.shape != b.shape:
        raise ValueError(f"the clips of a pair must have one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    t = t_min + (t_max - t_min) * torch.rand(a.shape[0], generator=generator)
    noise = torch.randn(a.shape, generator=generator).to(a.device)
    t = t.to(a.device)
    x_a, x_b = noise_pair(family, a, b, noise, t)
    return x_a, x_b, t, noise


# -- prompts -----------------------------------------------------------------------------------


def cat_conditioning(parts: Sequence[TextConditioning]) -> TextConditioning:
    """The parts' rows in order; image-to-video rows keep their image conditioning (``TextConditioning.cat``)."""
    if any(p.image for p in parts):
        return functools.reduce(TextConditioning.cat, parts)
    return TextConditioning(
        torch.cat([p.embeds for p in parts]), {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
    )


class PromptCache:
    """Prompt embeddings from the family's ``encode_prompts``, computed once per prompt, and for
    image-to-video pairs the image's conditioning from its ``encode_images``, computed once per image
    and video shape."""

    def __init__(self, family: PipelineFamily):
        self.family = family
        self._cache: dict[str, TextConditioning] = {}
        self._images: dict[tuple[Path | None, VideoShape], dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], images: Sequence[Path | None] | None = None,
                 shape: VideoShape | None = None) -> TextConditioning:
        """The conditioning of rows of ``prompts``; with ``images`` (one per row, ``None`` for a row
        without) and the clips' ``shape``, image-to-video rows carry their image's too."""
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if new:
            cond, _ = self.family.encode_prompts(new, None)
            for i, prompt in enumerate(new):
                self._cache[prompt] = cond.select([i]).detach()
        cond = cat_conditioning([self._cache[p] for p in prompts])
        if images is None or all(image is None for image in images):
            return cond
        return self.with_images(cond, images, shape)

    @torch.no_grad()
    def with_images(self, cond: TextConditioning, images: Sequence[Path | None], shape: VideoShape
                    ) -> TextConditioning:
        """``cond`` with the image conditioning of ``images`` (files, one per row; ``None`` for a row
        without, where the model allows it), each fitted to ``shape`` as a served job's image is.
        What a family draws at random for an image (CogVideoX's posterior sample) is drawn from
        :data:`IMAGE_SEED`: a pair's clips have no seed of their own here."""
        new = [image for image in dict.fromkeys(images) if (image, shape) not in self._images]
        for image in new:
            fitted = None if image is None else fit_image(read_image(image), shape.width, shape.height)
            generator = torch.Generator().manual_seed(IMAGE_SEED)
            self._images[image, shape] = self.family.encode_images_one_by_one([fitted], shape, [generator])
        parts = [self._images[image, shape] for image in images]
        return cond.with_image({k: torch.cat([part[k] for part in parts]) for k in parts[0]},
                               tuple(image is not None for image in images))


def hold_fixed_latents(family: PipelineFamily, noisy: torch.Tensor, clean: torch.Tensor,
                       cond: TextConditioning) -> torch.Tensor:
    """``noisy`` with the latents an image holds fixed (``family.free_latents``: LTX-Video's first frame)
    put back to ``clean``: the sampler never noises them, so the reward is never asked about them noisy."""
    free = family.free_latents(cond)
    if free is None:
        return noisy
    return torch.where(free.to(noisy.device) > 0, noisy, clean.to(noisy.dtype))


# -- configuration -----------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that shapes a training run (stored in the report as ``args``)."""

    objectives: Sequence[str] | None = None  # default: the data set's (or the --init model's)
    num_blocks: int | None = None  # default 2, or the init model's
    init: str | None = None  # an existing reward model directory to resume from
    epochs: int = 2
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0
    seed: int = 0
    freeze_trunk: bool = False
    theta: float = THETA
    #: Weight of :func:`gradient_correlation_penalty` (0: off).
    decorrelation: float = 0.0
    #: Std of Gaussian noise added to x_t, relative to its RMS (the same draw for both clips of a pair).
    input_noise: float = 0.0
    #: Share of the pairs with recorded sampler states trained on one of those states instead of on
    #: forward-noised final latents (0: never).
    trajectory_share: float = 0.0

    def validate(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0; got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1; got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number; got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight decay must be >= 0; got {self.weight_decay}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad clip must be > 0 (use inf for none); got {self.grad_clip}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t-min < t-max <= 1; got t-min {self.t_min}, t-max {self.t_max}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"blocks must be >= 1; got {self.num_blocks}")
        if not self.theta > 1.0:
            raise ValueError(f"theta must be > 1; got {self.theta}")
        if not (self.decorrelation >= 0 and math.isfinite(self.decorrelation)):
            raise ValueError(f"decorrelation must be a number >= 0; got {self.decorrelation}")
        if not (0 <= self.input_noise <= 1):
            raise ValueError(f"input noise must be between 0 and 1 (a share of the latents' RMS); got {self.input_noise}")
        if not (0 <= self.trajectory_share <= 1):
            raise ValueError(f"trajectory share must be between 0 and 1; got {self.trajectory_share}")


@dataclass
class TrainResult:
    model: LatentRewardModel
    report: dict[str, Any]
    out_dir: Path | None = None
    #: Mean training loss of every step, in order.
    step_losses: list[float] = field(default_factory=list)


def resolve_objectives(config: TrainConfig, data_objectives: Sequence[str]) -> tuple[str, ...]:
    """The objectives to train: --objectives, else the init model's, else the data set's."""
    wanted = tuple(config.objectives) if config.objectives else None
    if config.init is not None:
        init_objectives = tuple(read_reward_config(config.init)["objectives"])
        if wanted is not None and wanted != init_objectives:
            raise ValueError(
                f"--objectives {','.join(wanted)} differ from the --init model's ({','.join(init_objectives)})"
            )
        wanted = init_objectives
    wanted = wanted or tuple(data_objectives)
    unknown = [o for o in wanted if o not in data_objectives]
    if unknown:
        raise ValueError(
            f"objective(s) {', '.join(unknown)} not in the data set (its objectives: {', '.join(data_objectives)})"
        )
    return wanted


def build_model(family: PipelineFamily, objectives: Sequence[str], config: TrainConfig) -> LatentRewardModel:
    """A fresh model (copied trunk, seeded head) or the --init model, with the trainable parameters
    set: trunk blocks (unless ``freeze_trunk``) and head; the trunk's embeddings stay frozen."""
    if config.init is not None:
        model = load_reward_model(config.init, family)
        if tuple(model.objectives) != tuple(objectives):
            raise ValueError(f"the --init model's objectives {list(model.objectives)} differ from {list(objectives)}")
        if config.num_blocks is not None and config.num_blocks != model.num_blocks:
            raise ValueError(f"--blocks {config.num_blocks} differs from the --init model's {model.num_blocks}")
    else:
        model = init_reward_model(family, objectives, num_blocks=config.num_blocks or 2, seed=config.seed)
    model.requires_grad_(False)
    getattr(model.trunk, family.block_lists[0]).requires_grad_(not config.freeze_trunk)
    model.head.requires_grad_(True)
    return model


def trainable_parameter_count(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# -- batching ----------------------------------------------------------------------------------


def make_batches(data: PreferenceData, indices: Sequence[int], batch_size: int,
                 generator: torch.Generator | None) -> list[list[int]]:
    """Minibatches of pairs that share one video and latent shape. With a generator the pairs are
    shuffled within each shape and the batches shuffled between shapes; without, kept in order."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault((data.shapes[i], tuple(data.latents_a[i].shape)), []).append(i)
    batches = []
    for members in groups.values():
        if generator is not None:
            members = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    if generator is not None:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def _stack(data: PreferenceData, batch: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.stack([data.latents_a[i] for i in batch]).to(device)
    b = torch.stack([data.latents_b[i] for i in batch]).to(device)
    return a, b


def use_trajectory_states(
    data: PreferenceData, batch: list[int], x_a: torch.Tensor, x_b: torch.Tensor, t: torch.Tensor, share: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Replace the noisy pair of a ``share`` of the batch's pairs that record sampler states by one
    of those states (one step drawn per pair, the same for both clips, with its t). Two draws per
    pair from ``generator`` whatever the data, so the stream does not depend on which pairs have
    states. Returns (x_a, x_b, t, number of pairs replaced)."""
    chosen = torch.rand(len(batch), generator=generator) < share
    position = torch.rand(len(batch), generator=generator)
    x_a, x_b, t = x_a.clone(), x_b.clone(), t.clone()
    replaced = 0
    for row, i in enumerate(batch):
        levels = data.trajectory_t[i]
        if levels is None or not bool(chosen[row]):
            continue
        step = min(int(position[row] * len(levels)), len(levels) - 1)
        x_a[row] = data.trajectories_a[i][step].to(x_a.device, x_a.dtype)
        x_b[row] = data.trajectories_b[i][step].to(x_b.device, x_b.dtype)
        t[row] = levels[step]
        replaced += 1
    return x_a, x_b, t, replaced


def score_pairs(
    model: LatentRewardModel,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    t: torch.Tensor,
    cond: TextConditioning,
    shape: VideoShape,
    cond_b: TextConditioning | None = None,
) -> torch.Tensor:
    """d = r_A - r_B [B, K], both clips scored in one forward pass (batch of 2B); clip B under
    ``cond_b`` when given (prompt-contrastive pairs), else under ``cond``."""
    cond_b = cond if cond_b is None else cond_b
    scores = model(torch.cat([x_a, x_b]), torch.cat([t, t]), cat_conditioning([cond, cond_b]), shape).float()
    return scores[: x_a.shape[0]] - scores[x_a.shape[0] :]


def gradient_correlation_penalty(
    model: LatentRewardModel, x: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape
) -> torch.Tensor:
    """Mean over clips and objective pairs k < l of cos(grad_x r_k, grad_x r_l)^2, differentiable in
    the model's parameters (double backpropagation).

    Guidance follows each objective's input gradient; when all objectives' gradients point the same
    way (a shared trunk learns one "good clip" direction), per-objective weights cannot select an
    objective. Penalising the squared cosine lets each objective keep its own direction.
    """
    objectives = len(model.objectives)
    if objectives < 2:
        return x.new_zeros(())
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x = x.detach().float().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU/GPU attention kernels have no double backward
        scores = model(x, t, cond, shape).float()
        grads = [torch.autograd.grad(scores[:, k].sum(), x, create_graph=True)[0].flatten(1)
                 for k in range(objectives)]
    cosines = [torch.nn.functional.cosine_similarity(grads[k], grads[l], dim=-1, eps=1e-12) ** 2
               for k in range(objectives) for l in range(k + 1, objectives)]
    return torch.stack(cosines).mean()


# -- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: LatentRewardModel,
    family: PipelineFamily,
    data: PreferenceData,
    indices: Sequence[int] | None = None,
    prompts: PromptCache | None = None,
    batch_size: int = 8,
    theta: float = THETA,
) -> dict[str, Any] | None:
    """Held-out accuracy per objective and noise-level bucket (``None`` without held-out pairs).

    Returns ``{"pairs": N, "t": [midpoints], "buckets": [...], "objectives": {name: {"accuracy":
    [per bucket], "mean": float, "decisive": n, "ties": n, "tie_top": [per bucket]}}}``; an accuracy
    is ``None`` where an objective has no decisive held-out label.
    """
    indices = data.indices("test") if indices is None else list(indices)
    if not indices:
        return None
    prompts = prompts or PromptCache(family)
    was_training = model.training
    model.eval()
    mids = [(lo + hi) / 2 for lo, hi in BUCKETS]
    device = family.device
    diffs = torch.zeros(len(mids), len(indices), len(data.objectives))
    position = {i: p for p, i in enumerate(indices)}
    for batch in make_batches(data, indices, batch_size, None):
        a, b = _stack(data, batch, device)
        noise = torch.stack(
            [torch.randn(a.shape[1:], generator=torch.Generator().manual_seed(EVAL_SEED + i)) for i in batch]
        ).to(device)
        shape, images = data.shapes[batch[0]], [data.images[i] for i in batch]
        cond = prompts([data.prompts[i] for i in batch], images, shape)
        cond_b = prompts([data.prompts_b[i] for i in batch], images, shape)
        rows = [position[i] for i in batch]
        for m, mid in enumerate(mids):
            t = torch.full((len(batch),), mid, device=device)
            x_a, x_b = noise_pair(family, a, b, noise, t)
            x_a, x_b = hold_fixed_latents(family, x_a, a, cond), hold_fixed_latents(family, x_b, b, cond)
            diffs[m, rows] = score_pairs(model, x_a, x_b, t, cond, shape, cond_b).cpu()
    trajectory = _evaluate_states(model, data, data.with_trajectory(indices), prompts, batch_size, theta)
    model.train(was_training)
    labels = data.labels[indices]
    result: dict[str, Any] = {
        "pairs": len(indices),
        "t": mids,
        "buckets": [f"[{lo:.2f},{hi:.2f}{']' if hi == 1.0 else ')'}" for lo, hi in BUCKETS],
        "objectives": _accuracies(diffs, labels, data.objectives, theta),
    }
    if trajectory is not None:
        result["trajectory"] = trajectory
    return result


def _accuracies(diffs: torch.Tensor, labels: torch.Tensor, objectives: Sequence[str], theta: float,
                present: torch.Tensor | None = None) -> dict[str, Any]:
    """Per objective, the accuracy on decisive labels (and the tie statistics) of score differences
    ``diffs`` [buckets, pairs, K]; ``present`` [buckets, pairs] masks pairs without a score there."""
    out = {}
    for k, name in enumerate(objectives):
        decisive = (labels[:, k] == A_WINS) | (labels[:, k] == B_WINS)
        ties = labels[:, k] == TIE
        accuracy, tie_top = [], []
        for m in range(diffs.shape[0]):
            here = torch.ones_like(decisive) if present is None else present[m]
            d = diffs[m, :, k]
            predicted = torch.where(d > 0, A_WINS, torch.where(d < 0, B_WINS, -2))
            correct = (predicted == labels[:, k]) & decisive & here
            counted = int((decisive & here).sum())
            accuracy.append(float(correct.sum()) / counted if counted else None)
            top_is_tie = bt_ties_log_probs(d, theta).argmax(dim=-1) == TIE
            tied = int((ties & here).sum())
            tie_top.append(float((top_is_tie & ties & here).sum()) / tied if tied else None)
        known = [x for x in accuracy if x is not None]
        out[name] = {
            "accuracy": accuracy,
            "mean": sum(known) / len(known) if known else None,
            "decisive": int(decisive.sum()),
            "ties": int(ties.sum()),
            "tie_top": tie_top,
        }
    return out


def _evaluate_states(model: LatentRewardModel, data: PreferenceData, indices: list[int], prompts: PromptCache,
                     batch_size: int, theta: float) -> dict[str, Any] | None:
    """Accuracy on the recorded sampler states of held-out pairs: per noise-level bucket, the state
    of each pair nearest the bucket's midpoint (when one lies in the bucket)."""
    if not indices:
        return None
    device = next(model.parameters()).device
    diffs = torch.zeros(len(BUCKETS), len(indices), len(data.objectives))
    present = torch.zeros(len(BUCKETS), len(indices), dtype=torch.bool)
    levels_seen: list[list[float]] = [[] for _ in BUCKETS]
    position = {i: p for p, i in enumerate(indices)}
    for m, (lo, hi) in enumerate(BUCKETS):
        mid, steps = (lo + hi) / 2, {}
        for i in indices:
            inside = [(abs(float(v) - mid), s) for s, v in enumerate(data.trajectory_t[i])
                      if lo <= float(v) < hi or float(v) == hi == 1.0]
            if inside:
                steps[i] = min(inside)[1]
        for batch in make_batches(data, list(steps), batch_size, None):
            x_a = torch.stack([data.trajectories_a[i][steps[i]] for i in batch]).to(device)
            x_b = torch.stack([data.trajectories_b[i][steps[i]] for i in batch]).to(device)
            t = torch.stack([data.trajectory_t[i][steps[i]] for i in batch]).to(device)
            rows = [position[i] for i in batch]
            shape, images = data.shapes[batch[0]], [data.images[i] for i in batch]
            diffs[m, rows] = score_pairs(model, x_a, x_b, t, prompts([data.prompts[i] for i in batch], images, shape),
                                         shape, prompts([data.prompts_b[i] for i in batch], images, shape)).cpu()
            present[m, rows] = True
            levels_seen[m] += [float(v) for v in t.cpu()]
    return {
        "pairs": len(indices),
        "t": [sum(v) / len(v) if v else None for v in levels_seen],
        "objectives": _accuracies(diffs, data.labels[indices], data.objectives, theta, present),
    }


def format_accuracy_table(evaluation: dict[str, Any] | None) -> str:
    """The held-out accuracies as a fixed-width text table."""
    if evaluation is None:
        return "no held-out pairs: accuracies not computed (mark some pairs \"split\": \"test\")"
    t_heads = [f"t={t:.3f}" for t in evaluation["t"]]
    header = f"{'objective':<12}" + "".join(f"{h:>9}" for h in t_heads) + f"{'mean':>9}{'pairs':>7}{'ties':>6}"
    lines = [f"held-out accuracy ({evaluation['pairs']} pairs; decisive labels only, ties counted apart)", header]
    for name, entry in evaluation["objectives"].items():
        cells = "".join(f"{'-' if a is None else f'{a:.3f}':>9}" for a in entry["accuracy"])
        mean = "-" if entry["mean"] is None else f"{entry['mean']:.3f}"
        lines.append(f"{name:<12}{cells}{mean:>9}{entry['decisive']:>7}{entry['ties']:>6}")
    states = evaluation.get("trajectory")
    if states is not None:
        lines.append(f"on the sampler's own states ({states['pairs']} pairs; t = mean noise level of the states used)")
        lines.append(f"{'objective':<12}" + "".join(f"{'-' if t is None else f't={t:.3f}':>9}" for t in states["t"]))
        for name, entry in states["objectives"].items():
            lines.append(f"{name:<12}" + "".join(f"{'-' if a is None else f'{a:.3f}':>9}" for a in entry["accuracy"]))
    return "\n".join(lines)


# -- training ----------------------------------------------------------------------------------


def train_reward_model(
    family: PipelineFamily,
    data: PreferenceData,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a :class:`LatentRewardModel` for ``family`` on ``data`` (see the module docstring).

    Evaluates after every epoch (and once before training when ``epochs`` is 0); with ``out_dir``
    saves the model (``reward_config.json``, ``reward_model.safetensors``) and
    ``training_report.json`` there. Deterministic given ``config.seed`` (on one device and torch).
    Returns the trained model in eval mode without gradients, as :func:`load_reward_model` does.
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    config.validate()
    say = log or (lambda _: None)
    objectives = resolve_objectives(config, data.objectives)
    if tuple(objectives) != tuple(data.objectives):
        columns = [data.objectives.index(o) for o in objectives]
        data = replace(data, objectives=tuple(objectives), labels=data.labels[:, columns])
    train_idx = [i for i in data.indices("train") if bool((data.labels[i] != MISSING).any())]
    test_idx = data.indices("test")
    if not train_idx:
        raise ValueError("the data set has no training pairs with labels on the trained objectives")
    start = time.perf_counter()
    model = build_model(family, objectives, config)
    trainable, total = trainable_parameter_count(model)
    say(f"reward model for {', '.join(objectives)}: {model.num_blocks} trunk blocks, "
        f"{trainable:,} of {total:,} parameters trained; {len(train_idx)} training pairs, {len(test_idx)} held out")
    if config.trajectory_share > 0 and not data.with_trajectory(train_idx):
        raise ValueError(f"trajectory share {config.trajectory_share} needs training pairs that record sampler states "
                         "(\"trajectory\" in their latents files: nrg demo make-pairs --states); this data set has none")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    prompts = PromptCache(family)
    device = family.device

    epoch_losses: list[float] = []
    step_losses: list[float] = []
    epoch_penalties: list[float] = []  # mean gradient-correlation penalty per epoch
    state_pairs = 0  # training pairs taken at a recorded sampler state
    evaluations: list[dict[str, Any] | None] = []
    model.train()
    for epoch in range(config.epochs):
        batches = make_batches(data, train_idx, config.batch_size, generator)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress)
        total_loss, count = 0.0, 0
        penalties: list[float] = []
        for batch in bar:
            a, b = _stack(data, batch, device)
            x_a, x_b, t, _ = draw_noisy_pairs(family, a, b, generator, config.t_min, config.t_max)
            if config.trajectory_share > 0:
                x_a, x_b, t, replaced = use_trajectory_states(data, batch, x_a, x_b, t, config.trajectory_share,
                                                              generator)
                state_pairs += replaced
            if config.input_noise > 0:
                x_a, x_b = augment_pair(x_a, x_b, config.input_noise, generator)
            shape, images = data.shapes[batch[0]], [data.images[i] for i in batch]
            cond = prompts([data.prompts[i] for i in batch], images, shape)
            cond_b = prompts([data.prompts_b[i] for i in batch], images, shape)
            x_a, x_b = hold_fixed_latents(family, x_a, a, cond), hold_fixed_latents(family, x_b, b, cond)
            with torch.enable_grad():
                d = score_pairs(model, x_a, x_b, t, cond, shape, cond_b)
                loss = bt_ties_loss(d, data.labels[batch].to(d.device), config.theta)
                if config.decorrelation > 0:  # on half the batch: double backpropagation is the dear part
                    half = max(1, len(batch) // 2)
                    penalty = gradient_correlation_penalty(model, x_a[:half], t[:half], cond.select(list(range(half))),
                                                           shape)
                    penalties.append(float(penalty.detach()))
                    loss = loss + config.decorrelation * penalty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            value = float(loss.detach())
            step_losses.append(value)
            total_loss += value * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{total_loss / count:.4f}", **({"corr2": f"{penalties[-1]:.3f}"} if penalties else {}))
        bar.close()
        epoch_losses.append(total_loss / max(count, 1))
        if penalties:
            epoch_penalties.append(sum(penalties) / len(penalties))
        evaluation = evaluate(model, family, data, test_idx, prompts, config.batch_size, config.theta)
        evaluations.append(evaluation)
        say(f"epoch {epoch + 1}/{config.epochs}: train loss {epoch_losses[-1]:.4f}")
        say(format_accuracy_table(evaluation))
    if config.epochs == 0:
        evaluations.append(evaluate(model, family, data, test_idx, prompts, config.batch_size, config.theta))
        say(format_accuracy_table(evaluations[-1]))
    model.eval().requires_grad_(False)

    report = {
        "format_version": 1,
        "family": family.name,
        "objectives": list(objectives),
        "num_blocks": model.num_blocks,
        "args": {**asdict(config), "objectives": list(objectives), "num_blocks": model.num_blocks},
        "data": {
            "root": None if data.root is None else str(data.root.resolve()),
            "description": data.description,
            "train_pairs": len(train_idx),
            "test_pairs": len(test_idx),
            "dropped_pairs": data.dropped,
            "labels": {
                name: {label: int((data.labels[:, k] == code).sum()) for label, code in
                       (("A", A_WINS), ("B", B_WINS), ("tie", TIE), ("missing", MISSING))}
                for k, name in enumerate(objectives)
            },
        },
        "parameters": {"trained": trainable, "total": total},
        "loss": epoch_losses,
        "steps": len(step_losses),
        "trajectory_state_pairs": state_pairs,
        **({"decorrelation_penalty": epoch_penalties} if epoch_penalties else {}),
        "evaluations": evaluations,
        "accuracy": evaluations[-1] if evaluations else None,
        "seconds": round(time.perf_counter() - start, 3),
        "device": str(device),
        "dtype": str(family.dtype).removeprefix("torch."),
    }
    out = None
    if out_dir is not None:
        out = model.save(out_dir)
        (out / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n")
        say(f"wrote reward model and {REPORT_NAME} to {out}")
    return TrainResult(model, report, out, step_losses)
