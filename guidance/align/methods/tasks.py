"""The training-loop tasks of the methods beyond Flow-DPO and Flow-RWR (``guidance.align.trainer`` runs them).

Each task gives the minibatch loss of a step from that step's seed only (t, noise, online samples
and transformations are all drawn from generators seeded by (seed, step)), like Flow-DPO's. Online
methods keep copies of the adapter (lagging / EMA) in memory: a run resumed from ``align_state``
re-creates them from the resumed adapter, so resuming an online run is not bit-exact (offline
methods and the composable options are).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.data import OrientedPairs, clip_vote_counts, orient_pairs, winners_losers
from guidance.align.lora import adapter_disabled
from guidance.align.methods import losses as mlosses
from guidance.align.methods import online
from guidance.align.methods.frame_judge import FrameJudge
from guidance.align.methods.transforms import make_losers, parse_transforms
from guidance.align.noising import model_timestep, prediction_errors
from guidance.align.report import held_out_clip_pairs, held_out_pairs
from guidance.align.scored_clips import ScoredClips
from guidance.align.task import DpoTask, Task, derived_seed, draw_t_and_noise
from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.preference_data import PreferenceData
from guidance.train.reward import PromptCache, cat_conditioning


# -- the reward models the methods score with ------------------------------------------------------

class WeightedReward:
    """sum_k w_k r_k(x_t, t, c) of a latent reward model over the run's weighted objectives."""

    def __init__(self, family: PipelineFamily, path: str | Path, weights: dict[str, float], flag: str) -> None:
        from guidance.reward_model import load_reward_model

        self.model = load_reward_model(path, family)
        self.columns = [(self.model.objectives.index(k), w) for k, w in weights.items() if k in self.model.objectives]
        if not self.columns:
            raise ValueError(f"{flag} {path}: the reward model scores {', '.join(self.model.objectives)}, none of the "
                             f"run's objectives {', '.join(weights)}")

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond, shape: VideoShape) -> torch.Tensor:
        scores = self.model(x_t, t, cond, shape).float()
        return sum(w * scores[:, k] for k, w in self.columns)


# -- Flow-DPO options: IS-DAA, TVKD, Diff-UAPA -----------------------------------------------------

class DpoOptions:
    """The composable terms on a Flow-DPO pair loss (any subset):

    z <- z - alpha (1 - gamma) [Phi(x_t^w) - Phi(x_t^l)]         (TVKD, --teacher)
    L_i <- -log s(z_i) + map_ratio * MAP_i                         (Diff-UAPA, --uapa-map-ratio)
    L_i <- sg(IS weight_i) * L_i                                   (IS-DAA, --is-clip)
    """

    def __init__(self, config: AlignConfig, teacher: WeightedReward | None, counts: dict[int, tuple[float, float, float, float]] | None):
        self.config, self.teacher, self.counts = config, teacher, counts

    def loss(self, task: DpoTask, err, ref, beta_t, weights, x0, n2, t2, both, shape, rows):
        config, b = self.config, len(rows)
        z = losses.dpo_margin(err[:b], ref[:b], err[b:], ref[b:], beta_t)
        if self.teacher is not None:
            x_t = task.family.add_noise(x0, n2, t2)
            phi = self.teacher(x_t, t2, both, shape)
            z = z - mlosses.tvkd_shaping(phi[:b], phi[b:], config.tvkd_alpha, config.tvkd_gamma).to(z)
        map_term = None
        if self.counts is not None:
            c = torch.tensor([self.counts[r] for r in rows], dtype=torch.float32, device=z.device)
            map_term = mlosses.uapa_map_term(z, c[:, 0], c[:, 1], c[:, 2], c[:, 3])
        importance = None
        if config.is_clip is not None:
            kappa = beta_t if config.is_kappa is None else config.is_kappa
            importance = mlosses.is_weight(err[:b] - ref[:b], err[b:] - ref[b:], kappa, config.is_clip)
        loss = mlosses.composed_dpo_loss(z, weights, importance, map_term, config.uapa_map_ratio or 0.0)
        return loss, float((z.detach() > 0).float().mean())


def dpo_options(family: PipelineFamily, data: PreferenceData, pairs: OrientedPairs, config: AlignConfig,
                weights: dict[str, float]) -> tuple[DpoOptions | None, dict[str, Any]]:
    """The options of a Flow-DPO-family run (None when none is given) and what the report notes."""
    if config.is_clip is None and config.teacher is None and config.uapa_map_ratio is None:
        return None, {}
    teacher = None if config.teacher is None else WeightedReward(family, config.teacher, weights, "--teacher")
    counts, info = None, {}
    if config.uapa_map_ratio is not None:
        if data.root is None:
            raise ValueError("--uapa-map-ratio needs a preference data set read from a directory (its votes)")
        votes = clip_vote_counts(data.root, data, pairs, weights)
        counts, info = votes.per_row, {"uapa": votes.summary}
    return DpoOptions(config, teacher, counts), info


# -- shared helpers --------------------------------------------------------------------------------

def _clip_items(data: PreferenceData | ScoredClips, weights: dict[str, float]) -> list[tuple[torch.Tensor, str, VideoShape]]:
    """(clean latents, prompt, shape) of the training clips: the winners of decided pairs, or every
    scored clip."""
    if isinstance(data, ScoredClips):
        return [(data.latents[i], data.prompts[i], data.shapes[i]) for i in data.indices("train")]
    pairs = orient_pairs(data, weights, data.indices("train"))
    win, _ = winners_losers(data, pairs, range(len(pairs.index))) if pairs.index else ([], [])
    return [(win[r], data.prompts[i], data.shapes[i]) for r, i in enumerate(pairs.index)]


def _held_out(data, weights):
    if isinstance(data, ScoredClips):
        return held_out_clip_pairs(data, data.combined(weights))
    return held_out_pairs(data, weights)


class _ClipTask(Task):
    """Items are training clips (latents, prompt, shape); one latent shape per minibatch."""

    def __init__(self, family: PipelineFamily, items, config: AlignConfig, prompts: PromptCache, what: str) -> None:
        if not items:
            raise ValueError(f"--method {config.method}: no training {what}")
        self.family, self.items, self.config, self.prompts = family, items, config, prompts
        self.keys = [(shape, tuple(x.shape)) for x, _, shape in items]

    def batch(self, rows):
        x0 = torch.stack([self.items[r][0] for r in rows]).to(self.family.device)
        return x0, [self.items[r][1] for r in rows], self.items[rows[0]][2]

    def errors(self, x0: torch.Tensor, step: int, cond, shape, copies: int = 2):
        """Policy and reference errors of ``x0`` (copies x the batch, stacked) with one t and noise
        per item shared across the copies."""
        b = x0.shape[0] // copies
        t, noise = draw_t_and_noise(x0.shape[1:], b, self.config.seed, step, self.config.t_min, self.config.t_max)
        t, noise = t.to(x0.device), noise.to(x0.device)
        n, tt = torch.cat([noise] * copies), torch.cat([t] * copies)
        with adapter_disabled(self.family):
            ref = prediction_errors(self.family, self.family.transformer, x0, n, tt, cond, shape)
        err = prediction_errors(self.family, self.family.transformer, x0, n, tt, cond, shape)
        return err, ref, t


def _step_generator(config: AlignConfig, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(config.seed, step, salt))


# -- Diffusion-DRO ---------------------------------------------------------------------------------

class DroTask(_ClipTask):
    """Experts (the data's clips) against online negatives the lagging copy samples for the same
    prompts; hinge loss of ``mlosses.dro_loss``. The lagging copy is the adapter as it was at the
    last multiple of ``--dro-lag`` steps (the base model before the first refresh)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.lagging: list[torch.Tensor] | None = None

    def loss(self, step, rows):
        config = self.config
        expert, prompts, shape = self.batch(rows)
        if self.lagging is None:
            self.lagging = online.lora_snapshot(self.family)
        seeds = [derived_seed(config.seed, step, r, 0xD20) % (2**31) for r in rows]
        with online.swapped_lora(self.family, self.lagging):
            negative = online.sample_latents(self.family, prompts, shape, config.online_steps, seeds, config.online_cfg)
        cond = self.prompts(prompts)
        err, ref, _ = self.errors(torch.cat([expert, negative.to(expert)]), step, cat_conditioning([cond, cond]), shape)
        b = len(rows)
        d = err - ref
        loss, diff = mlosses.dro_loss(d[:b], d[b:], config.dro_margin)
        return loss, float((diff < -config.dro_margin).float().mean())

    def after_step(self, step):
        if (step + 1) % self.config.dro_lag == 0:
            self.lagging = online.lora_snapshot(self.family)


# -- SUDO ------------------------------------------------------------------------------------------

class SudoTask(_ClipTask):
    """Winners from the data, losers made from them (``transforms.make_losers``); the authors' loss
    (1 - c) DPO + c e_th(winner)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.names = parse_transforms(self.config.sudo_transforms)

    def loss(self, step, rows):
        config = self.config
        win, prompts, shape = self.batch(rows)
        lose = make_losers(win.cpu(), self.names, _step_generator(config, step, 0x5D0),
                           blur_radius=config.sudo_blur, noise_std=config.sudo_noise).to(win)
        cond = self.prompts(prompts)
        err, ref, t = self.errors(torch.cat([win, lose]), step, cat_conditioning([cond, cond]), shape)
        b = len(rows)
        z = losses.dpo_margin(err[:b], ref[:b], err[b:], ref[b:], losses.beta_at(config.beta, t, config.beta_schedule))
        return mlosses.sudo_loss(z, err[:b], config.sudo_sft), float((z.detach() > 0).float().mean())


# -- ABC -------------------------------------------------------------------------------------------

class _AbcOptions:
    """ABC on Flow-DPO's pairs and forward passes: the loss of ``mlosses.abc_loss`` (pair -> two labels)."""

    def loss(self, task, err, ref, beta_t, weights, x0, n2, t2, both, shape, rows):
        loss, r = mlosses.abc_loss(err[:len(rows)] - ref[:len(rows)], err[len(rows):] - ref[len(rows):], beta_t, weights)
        return loss, float((r[0] > r[1]).float().mean())


# -- SPO / GradSPO ---------------------------------------------------------------------------------

class SpoTask(_ClipTask):
    """Step-wise preferences: x_t from the policy's own sample of the item's prompt, noised to a
    random t; k children of one SDE step from x_t (policy mean, independent injected noises); the
    step-aware reward model scores them at t + dt; the best and the worst form the step's pair when
    their softmax-probability gap exceeds ``--spo-threshold``.

    SPO: L = -log s(beta (log rho_best - log rho_worst)), rho the clamped policy / reference ratio of
    the children's step densities. GradSPO: velocity targets v_EMA(x_t) -/+ g s d with the guidance
    vector d = (xi_best - xi_worst) / 2, errors of policy and reference against them, the Flow-DPO
    form on those errors (g = 0: both targets equal, zero gradient).
    """

    def __init__(self, family, items, config, prompts, what, reward: WeightedReward) -> None:
        super().__init__(family, items, config, prompts, what)
        self.reward = reward
        self.ema: list[torch.Tensor] | None = None

    def loss(self, step, rows):
        config, family = self.config, self.family
        _, prompts, shape = self.batch(rows)
        seeds = [derived_seed(config.seed, step, r, 0x5B0) % (2**31) for r in rows]
        x0 = online.sample_latents(family, prompts, shape, config.online_steps, seeds, config.online_cfg)
        b = len(rows)
        gen = _step_generator(config, step, 0x5B1)
        lo = max(config.t_min, 1.0 / config.online_steps)
        t = lo + (config.t_max - lo) * torch.rand(b, generator=gen)
        t = t.clamp(max=1.0 - 1e-3)
        dt = torch.full((b,), -1.0 / config.online_steps)
        noise = torch.randn(x0.shape, generator=gen)
        device = x0.device
        t, dt, noise = t.to(device), dt.to(device), noise.to(device)
        x_t = family.add_noise(x0, noise, t)
        cond = self.prompts(prompts)
        timestep = model_timestep(family, t).to(device)
        v_ema = None
        if config.method == "gradspo":  # before the policy pass: swapping tensors in would break its graph
            if self.ema is None:
                self.ema = online.lora_snapshot(family)
            with online.swapped_lora(family, self.ema):
                v_ema = family.predict(family.transformer, x_t, timestep, cond, shape).float()
        v_th = family.predict(family.transformer, x_t, timestep, cond, shape).float()
        with adapter_disabled(family):
            v_ref = family.predict(family.transformer, x_t, timestep, cond, shape).float()
        std = mlosses.sde_std(t, config.spo_noise) * (-dt).sqrt()
        mean_th = mlosses.sde_mean(x_t, v_th, t, dt, config.spo_noise)
        view = (-1,) + (1,) * (x_t.ndim - 1)
        k = config.spo_children
        xi = torch.randn((k, *x_t.shape), generator=gen).to(device)
        children = mean_th.detach().unsqueeze(0) + std.view(view).unsqueeze(0) * xi
        scores = torch.stack([self.reward(children[j], t + dt, cond, shape) for j in range(k)], dim=1)  # [B, k]
        best, worst = scores.argmax(dim=1), scores.argmin(dim=1)
        probs = torch.softmax(scores, dim=1)
        idx = torch.arange(b, device=device)
        mask = (probs[idx, best] - probs[idx, worst]) > config.spo_threshold
        xi_w, xi_l = xi[best, idx], xi[worst, idx]
        if config.method == "spo":
            mean_ref = mlosses.sde_mean(x_t, v_ref, t, dt, config.spo_noise)
            child_w, child_l = children[best, idx], children[worst, idx]
            lr_w = mlosses.step_log_ratio(child_w, mean_th, mean_ref, std)
            lr_l = mlosses.step_log_ratio(child_l, mean_th, mean_ref, std)
            loss = mlosses.spo_loss(lr_w, lr_l, config.spo_beta, config.spo_clip, mask)
            return loss, float(((lr_w > lr_l) & mask).float().sum() / mask.float().sum().clamp(min=1))
        coef = 1.0 + mlosses.sde_std(t, config.spo_noise).pow(2) * (1.0 - t) / (2.0 * t.clamp(min=1e-4))
        scale = std / ((-dt) * coef)
        target_w, target_l = mlosses.gradspo_targets(v_ema, 0.5 * (xi_w - xi_l), scale, config.gradspo_g)
        e = lambda v, target: (v - target).pow(2).flatten(1).mean(dim=1)  # noqa: E731
        beta_t = losses.beta_at(config.beta, t, config.beta_schedule)
        z = losses.dpo_margin(e(v_th, target_w), e(v_ref, target_w), e(v_th, target_l), e(v_ref, target_l), beta_t)
        per = -torch.nn.functional.logsigmoid(z)
        m = mask.to(per)
        return (per * m).sum() / m.sum().clamp(min=1.0), float(((z.detach() > 0) & mask).float().mean())

    def after_step(self, step):
        if self.config.method == "gradspo" and self.ema is not None:
            online.ema_update(self.ema, self.family, self.config.gradspo_ema)


# -- SPRO ------------------------------------------------------------------------------------------

class SproJudge:
    """Scores clean latents of one prompt's samples, weighted by the objectives: the reward model at
    t = 0 (``--judge reward``), or the caller's frame judge on the decoded frames (``--judge demo``)."""

    def __init__(self, family: PipelineFamily, config: AlignConfig, weights: dict[str, float], prompts: PromptCache,
                 frame_judge: FrameJudge | None) -> None:
        self.family, self.weights, self.prompts = family, weights, prompts
        self.reward = WeightedReward(family, config.reward_model, weights, "--reward-model") if config.judge == "reward" else None
        self.frame_judge = frame_judge if config.judge == "demo" else None
        if config.judge == "demo":
            if frame_judge is None:
                raise ValueError("--judge demo scores decoded frames with a frame judge, and none was given: the "
                                 "caller of guidance.align.trainer.align passes frame_judge= (nrg align passes "
                                 "the demo world's ground truth)")
            unknown = [k for k in weights if k not in frame_judge.objectives]
            if unknown:
                raise ValueError(f"--judge demo scores {', '.join(frame_judge.objectives)}; --objectives has "
                                 f"{', '.join(unknown)}")

    def __call__(self, latents: torch.Tensor, prompts: list[str], shape: VideoShape) -> torch.Tensor:
        if self.reward is not None:
            t = torch.zeros(latents.shape[0], device=latents.device)
            return self.reward(latents, t, self.prompts(prompts), shape).float().cpu()
        frames = online.decode_frames(self.family, latents, shape)
        return torch.tensor([sum(w * self.frame_judge.score(f.numpy(), p)[k] for k, w in self.weights.items())
                             for f, p in zip(frames, prompts)])


class SproTask(Task):
    """Self-play rounds: at the first step of each of ``--rounds`` rounds, K clips per training prompt
    from the current policy, scored by the judge; each prompt's best and worst (if they differ)
    become a Flow-DPO pair for the round's steps (reference: the base model). The composable options
    (IS-DAA, TVKD) apply to the round's pair loss."""

    def __init__(self, family, config, prompts, weights, prompt_items: list[tuple[str, VideoShape, tuple]],
                 frame_judge: FrameJudge | None = None) -> None:
        if not prompt_items:
            raise ValueError("--method spro: no training prompt")
        self.family, self.config, self.prompts, self.weights = family, config, prompts, weights
        self.items = prompt_items
        self.keys = [(shape, latent) for _, shape, latent in prompt_items]
        self.judge = SproJudge(family, config, weights, prompts, frame_judge)
        self.round = -1
        self.inner: DpoTask | None = None
        self.row_of: dict[int, int] = {}
        self.rounds_info: list[dict[str, Any]] = []

    def _generate(self, round_index: int) -> None:
        config, k = self.config, self.config.spro_samples
        a, b, prompts, shapes, self.row_of = [], [], [], [], {}
        gaps = []
        for position, (prompt, shape, _) in enumerate(self.items):
            seeds = [derived_seed(config.seed, round_index, position, j, 0x5B2) % (2**31) for j in range(k)]
            latents = online.sample_latents(self.family, [prompt] * k, shape, config.online_steps, seeds, config.online_cfg)
            scores = self.judge(latents, [prompt] * k, shape)
            best, worst = int(scores.argmax()), int(scores.argmin())
            if float(scores[best]) == float(scores[worst]):
                continue
            self.row_of[position] = len(a)
            a.append(latents[best].cpu())
            b.append(latents[worst].cpu())
            prompts.append(prompt)
            shapes.append(shape)
            gaps.append(float(scores[best] - scores[worst]))
        self.rounds_info.append({"round": round_index, "pairs": len(a), "mean_gap": sum(gaps) / max(1, len(gaps))})
        if not a:
            self.inner = None
            return
        data = PreferenceData(objectives=("judge",), prompts=prompts, latents_a=a, latents_b=b, shapes=shapes,
                              labels=torch.zeros((len(a), 1), dtype=torch.long), test=torch.zeros(len(a), dtype=torch.bool),
                              lines=list(range(len(a))))
        pairs = OrientedPairs(list(range(len(a))), [True] * len(a), [1.0] * len(a))
        options, _ = dpo_options(self.family, data, pairs, self.config, self.weights)
        self.inner = DpoTask(self.family, data, pairs, self.config, self.prompts, options)

    def loss(self, step, rows):
        per_round = max(1, math.ceil(self.total / self.config.rounds))
        round_index = step // per_round
        if round_index != self.round:
            self.round = round_index
            self._generate(round_index)
        kept = [self.row_of[r] for r in rows if r in self.row_of]
        if self.inner is None or not kept:
            zero = sum(p.sum() for p in self.family.transformer.parameters() if p.requires_grad) * 0.0
            return zero, None
        return self.inner.loss(step, kept)


# -- hybrid offline-online -------------------------------------------------------------------------

class HybridTask(Task):
    """Cycles of N offline Flow-DPO steps on the preference pairs and M online steps of generalisation
    recovery: the flow-matching loss e_th on the base model's own samples (adapter disabled) of a
    broad prompt set (``--online-prompts``, default the data's training prompts). M = 0 is Flow-DPO."""

    def __init__(self, dpo: DpoTask, config: AlignConfig, prompt_list: list[str], shape_of_prompts) -> None:
        self.dpo, self.config = dpo, config
        self.keys = dpo.keys
        self.prompt_list, self.shape = prompt_list, shape_of_prompts

    def loss(self, step, rows):
        config = self.config
        if mlosses.hybrid_phase(step, config.hybrid_offline, config.hybrid_online) == "offline":
            return self.dpo.loss(step, rows)
        family = self.dpo.family
        gen = _step_generator(config, step, 0x4B1)
        picks = torch.randint(len(self.prompt_list), (len(rows),), generator=gen).tolist()
        prompts = [self.prompt_list[i] for i in picks]
        seeds = [derived_seed(config.seed, step, j, 0x4B2) % (2**31) for j in range(len(rows))]
        with adapter_disabled(family):
            x0 = online.sample_latents(family, prompts, self.shape, config.online_steps, seeds, config.online_cfg)
        t, noise = draw_t_and_noise(x0.shape[1:], len(rows), config.seed, step, config.t_min, config.t_max)
        err = prediction_errors(family, family.transformer, x0, noise.to(x0.device), t.to(x0.device),
                                self.dpo.prompts(prompts), self.shape)
        return err.mean(), None


# -- building a task -------------------------------------------------------------------------------

def build_task(family: PipelineFamily, data: PreferenceData | ScoredClips, config: AlignConfig,
               weights: dict[str, float], prompts: PromptCache, eval_pairs: PreferenceData | None = None,
               frame_judge: FrameJudge | None = None):
    """(task, held-out pairs, report data info) of a method other than flow-dpo / flow-rwr;
    ``frame_judge`` scores SPRO's samples under ``--judge demo``."""
    method = config.method
    info: dict[str, Any] = {}
    if method in ("abc", "hybrid"):
        if not isinstance(data, PreferenceData):
            raise ValueError(f"--method {method} trains on preference pairs (pairs.jsonl); got scored clips")
        pairs = orient_pairs(data, weights, data.indices("train"))
        if not pairs.index:
            raise ValueError(f"no training pair is decided by the labels of {', '.join(weights)} (all ties or missing)")
        info = {"pairs": len(data), "train_pairs": len(pairs.index)}
        if method == "abc":
            task: Task = DpoTask(family, data, pairs, config, prompts, _AbcOptions())
        else:
            options, extra = dpo_options(family, data, pairs, config, weights)
            dpo = DpoTask(family, data, pairs, config, prompts, options)
            prompt_list = _read_prompts(config.online_prompts) if config.online_prompts else sorted(
                {data.prompts[i] for i in pairs.index})
            shapes = {data.shapes[i] for i in pairs.index}
            if len(shapes) != 1:
                raise ValueError("--method hybrid samples one video shape; the pairs have several")
            task = HybridTask(dpo, config, prompt_list, shapes.pop())
            info.update(extra, online_prompts=len(prompt_list))
        return task, held_out_pairs(data, weights), info
    items = _clip_items(data, weights)
    what = "clips" if isinstance(data, ScoredClips) else "winners (decided pairs)"
    info = {"train_items": len(items), "items": what}
    if method == "diffusion-dro":
        task = DroTask(family, items, config, prompts, what)
    elif method == "sudo":
        task = SudoTask(family, items, config, prompts, what)
    elif method in ("spo", "gradspo"):
        reward = WeightedReward(family, config.reward_model, weights, "--reward-model")
        task = SpoTask(family, items, config, prompts, what, reward)
    elif method == "spro":
        seen: dict[tuple[str, VideoShape], tuple] = {}
        for x, prompt, shape in items:
            seen.setdefault((prompt, shape), tuple(x.shape))
        task = SproTask(family, config, prompts, weights, [(p, s, latent) for (p, s), latent in seen.items()],
                        frame_judge)
        info = {"train_prompts": len(seen), "samples_per_prompt": config.spro_samples, "rounds": config.rounds,
                "judge": config.judge, "round_log": task.rounds_info}
    else:
        raise ValueError(f"unknown method {method!r}")
    held_out = held_out_pairs(eval_pairs, weights) if eval_pairs is not None else _held_out(data, weights)
    return task, held_out, info


def _read_prompts(path: str) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--online-prompts {path}: no prompt")
    return lines
