"""A steppable guided batch: samples join at a step boundary, take one step each, and leave when done.

This is the loop body of ``guidance.sampler.sample`` turned inside out, so a server can keep one
batch running and refill it (step-level continuous batching):

    batch = BatchState(family, shape, reward)
    batch.add(specs, steps, ids)          # encode prompts, draw noise, schedules and coefficients
    while batch:
        batch.step()                      # one step of every row, whatever step each row is at
        if batch.finished():
            result = batch.pop_finished() # final rewards, particle choice, decode; rows leave
        batch.add(...)                    # newcomers join here; batch.remove(ids) for cancels

Every row carries its own schedule (``guidance.schedule``): timesteps, noise levels, guidance
coefficients and Euler step sizes are per row, so rows at different steps, with different step
counts, CFG scales, weights, strengths and windows share one denoiser call. A step is: particle
selection (search modes only) -> denoiser per expert (cond, uncond for the CFG rows) -> reward
gradients for the rows guided at this step only -> one fused kernel call per gradient mode present,
and one gradient-free call (``grads=None``) for the unguided rows. One host read per step (``tolist``)
brings back the per-sample report; phase timings use CUDA events, not syncs.

A sample's result never depends on its batch-mates or on when it joined: noise comes from its own
generator, prompts are padded to a fixed length, and every per-sample number is indexed by row.
A scheduler that is not a plain flow Euler step (CogVideoX's DDIM / DPM-Solver++) keeps batched
history: such a batch starts together, takes no newcomers, and its cancelled samples ride along to
the end and are dropped then.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch

from guidance import search
from guidance.batch_rows import BatchRows
from guidance.families.base import PipelineFamily, RowAdapters, TextConditioning, VideoShape
from guidance.multi_lora import MultiLora
from guidance.nrg import DEFAULT_MAX_RATIO, check_gradient_objectives
from guidance.precision import check_guidance_dtype
from guidance.rewards import RewardFunction, RowByRowReward, default_chunk_rows, reward_and_gradients
from guidance.row_time import RowClock
from guidance.sample_types import SampleProgress, SampleResult, SampleSpec
from guidance.schedule import Schedule
from guidance.step_cache import StepCache
from guidance.timing import PhaseTimer
from guidance.video_to_video import check_video_specs, sample_start
from kernels.guided_step import guided_step


#: Finished samples decoded per VAE call.
DECODE_CHUNK_ROWS = 1
#: Index tensors a batch keeps on its device; past that many distinct ones (memberships change as
#: samples come and go) the cache starts over.
DEVICE_VALUES_KEPT = 64


def _row(values: torch.Tensor | None, j: int) -> torch.Tensor | None:
    """Row ``j`` of ``values`` as a batch of one (None stays None)."""
    return None if values is None else values[j:j + 1]


def check_specs(specs: Sequence[SampleSpec], reward: RewardFunction | None, loras: MultiLora | None = None,
                step_cache: StepCache | None = None) -> None:
    """Validate every sample's guidance, adapter and cache threshold (``ValueError`` naming the sample)."""
    if not specs:
        raise ValueError("a batch needs at least one sample")
    for i, spec in enumerate(specs):
        if spec.cfg_scale is not None and not (spec.cfg_scale >= 0 and spec.cfg_scale < float("inf")):
            raise ValueError(f"sample {i}: cfg_scale must be a finite number >= 0; got {spec.cfg_scale!r}")
        if not math.isfinite(spec.lora_scale):
            raise ValueError(f"sample {i}: lora_scale must be a finite number; got {spec.lora_scale!r}")
        if not (0.0 <= spec.cache_threshold < float("inf")):
            raise ValueError(f"sample {i}: cache_threshold must be a finite number >= 0; got {spec.cache_threshold!r}")
        if spec.cache_threshold > 0 and step_cache is None:
            raise ValueError(f"sample {i}: cache_threshold {spec.cache_threshold} needs a step cache on the batch")
        if spec.lora is not None:
            if loras is None:
                raise ValueError(f"sample {i}: LoRA {spec.lora!r} was requested but the batch has no adapters")
            try:
                loras.index(spec.lora)
            except ValueError as exc:
                raise ValueError(f"sample {i}: {exc}") from None
        if spec.guidance is None:
            continue
        if reward is None and spec.guidance.active:
            raise ValueError(f"sample {i}: reward guidance was requested but no reward model is loaded")
        # A reward without ``differentiable`` (a latent reward) has a gradient for every objective.
        differentiable = getattr(reward, "differentiable", None)
        try:
            spec.guidance.validate(reward.objectives if reward is not None else ())
            if differentiable is not None:
                check_gradient_objectives(spec.guidance, differentiable)
        except ValueError as exc:
            raise ValueError(f"sample {i}: {exc}") from None


class BatchState:
    """The running batch of one (family, shape, reward); see the module docstring."""

    def __init__(self, family: PipelineFamily, shape: VideoShape, reward: RewardFunction | None = None,
                 *, max_ratio: float = DEFAULT_MAX_RATIO, loras: MultiLora | None = None,
                 reward_chunk_rows: int | None = None, batch_invariant: bool = False,
                 step_cache: StepCache | None = None) -> None:
        family.check_shape(shape)
        self.family = family
        #: Per-sample LoRA adapters (``SampleSpec.lora``), applied row by row in every denoiser call.
        self.loras = loras
        #: First-block caching of the samples that ask for it (``SampleSpec.cache_threshold``), per row.
        self.step_cache = step_cache
        self.shape = shape
        self.reward = reward
        self.max_ratio = max_ratio
        #: Guided rows differentiated together (``guidance.rewards``): the reward backward's memory is
        #: that many rows', however many rows are guided (None: ``default_chunk_rows`` for the device).
        self.reward_chunk_rows = 1 if batch_invariant else (
            reward_chunk_rows if reward_chunk_rows is not None else default_chunk_rows(reward, family.device))
        #: Every model call (text encoder, denoiser, reward forward and backward, decoder) and every
        #: fused step sees one row, so a row's numbers cannot depend on its batch-mates: a BLAS or a
        #: reduction may pick its blocking, and so its rounding, by the number of rows it is given.
        #: Costs the batching (``benchmarks/batch_invariance_bench.py``).
        self.batch_invariant = batch_invariant
        #: Scores without a gradient (search pruning, final rewards).
        self.scorer = RowByRowReward(reward) if batch_invariant and reward is not None else reward
        self.objectives: tuple[str, ...] = reward.objectives if reward is not None else ()
        self.device = family.device
        self.timer = PhaseTimer(self.device)
        #: Each sample's measured seconds and those of one unguided row of it (``guidance.row_time``).
        self.clock = RowClock(self.device)
        self.rows: BatchRows | None = None
        #: Denoiser passes per sample so far (its particles count each).
        self.passes: Counter[Hashable] = Counter()
        #: Clean estimates per sample that the reward decoded to score them, with or without a gradient
        #: (a reward that ``decodes``: a judge's; its particles count each): the cost a latent reward
        #: does not have.
        self.decodes: Counter[Hashable] = Counter()
        #: Denoiser calls per sample (CFG halves each) whose blocks after the first the step cache skipped.
        self.cached_calls: Counter[Hashable] = Counter()
        #: Cancelled samples that must ride along to the end (non-joinable schedules).
        self._dropped: set[Hashable] = set()
        #: Index tensors already on the device, by their values (``_to_device``).
        self._device_values: dict[tuple, torch.Tensor] = {}

    # -- membership -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[Hashable]:
        """The samples in the batch (one per sample, however many particle rows it has)."""
        return [] if self.rows is None else list(self.rows.groups())

    def __len__(self) -> int:
        return len(self.ids)

    def __bool__(self) -> bool:
        return self.rows is not None and len(self.rows) > 0

    @property
    def rows_in_use(self) -> int:
        """Rows the denoiser runs per step (a search sample's particles count each)."""
        return 0 if self.rows is None else len(self.rows)

    @property
    def joinable(self) -> bool:
        """Whether samples can join now: an empty batch, or one whose rows all step independently."""
        return self.rows is None or all(s.joinable for s in self.rows.schedules)

    @torch.no_grad()
    def add(self, specs: Sequence[SampleSpec], steps: int, ids: Iterable[Hashable]) -> None:
        """Encode, draw the noise of and schedule new samples, which take their first step at the next
        :meth:`step`. ``ValueError`` for bad specs, a repeated id, or a batch that cannot take them."""
        ids = list(ids)
        if len(ids) != len(specs) or len(set(ids)) != len(ids):
            raise ValueError(f"add needs one distinct id per sample; got {len(ids)} ids for {len(specs)} samples")
        present = set(self.ids) & set(ids)
        if present:
            raise ValueError(f"samples {sorted(map(str, present))} are already in the batch")
        check_specs(specs, self.reward, self.loras, self.step_cache)
        check_video_specs(self.family, specs)
        if any(s.guidance is not None and s.guidance.active and not s.guidance.search for s in specs):
            check_guidance_dtype(self.family.dtype)
        search.check_searchable(self.family, [s.guidance for s in specs])
        if not self.joinable:
            raise ValueError(f"this batch cannot take new samples: {self.family.name}'s scheduler keeps "
                             "batched history, so its batches start together")
        # Video-to-video samples start part-way down the schedule (``guidance.video_to_video``).
        starts = [sample_start(spec, steps) for spec in specs]
        schedule = self.family.schedule(steps, self.shape)
        if not schedule.joinable:
            # The scheduler's own state steps every row together, from one step of its schedule.
            if len(set(starts)) > 1:
                raise ValueError(f"{self.family.name}'s scheduler keeps batched history, so the samples of a batch "
                                 f"must start at the same step; their denoise_strength gives steps {sorted(set(starts))}")
            if starts[0]:
                self.family.begin_at(starts[0])
        with self.timer.phase("encode_s"):
            new = self._new_rows(specs, schedule, ids, starts)
        if self.rows is None or not len(self.rows):
            self.rows = new
        else:
            self.rows.extend(new)

    def remove(self, ids: Iterable[Hashable]) -> list[Hashable]:
        """Stop samples (cancelled): they leave at once, or at the end on a non-joinable schedule
        (dropped from its result then). Returns the ids that were in the batch."""
        gone = set(ids) & set(self.ids)
        if not gone:
            return []
        present = [sid for sid in self.ids if sid in gone]
        if self.joinable:
            self.rows.keep([row for row, sid in enumerate(self.rows.ids) if sid not in gone])
            self._leave(gone)
            self.clock.drop(list(gone))
        else:
            self._dropped |= gone
        return present

    def finished(self) -> list[Hashable]:
        """Samples whose every row has taken its last step (they leave with :meth:`pop_finished`)."""
        if self.rows is None:
            return []
        done = set(self.rows.finished_rows())
        return [sid for sid, rows in self.rows.groups().items() if all(row in done for row in rows)]

    # -- one step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[SampleProgress]:
        """One step of every unfinished row; the per-sample report, read back with one host sync."""
        rows = self.rows
        if rows is None or not len(rows):
            raise ValueError("the batch is empty: add samples before stepping it")
        if rows.finished_rows():
            raise ValueError("finished samples must leave (pop_finished) before the next step")
        if self.reward is not None and len(rows) > len(set(rows.ids)):
            with self.timer.phase("guidance_s"):
                due = search.due_particles(rows)
                with self.clock.charge([sid for sid, scored in due.items() for _ in scored]):
                    self._count_decodes(search.select(rows, self.scorer, self.shape, due))
        index = rows.steps_done
        schedules = rows.schedules
        levels = [s.noise_levels[i] for s, i in zip(schedules, index)]
        coefs = [c[i] for c, i in zip(rows.coefs, index)]
        euler = schedules[0].dt is not None
        # Every per-row number of this step in one host-to-device transfer (float64 holds each exactly).
        values = self._to_device([[s.timesteps[i] for s, i in zip(schedules, index)], coefs, levels,
                                  [i + 1 for i in index], [s.dt[i] if euler else 0.0 for s, i in zip(schedules, index)]],
                                 torch.float64, cache=False)
        timesteps = values[0].to(schedules[0].timestep_dtype)
        coef, level, taken = values[1].float(), values[2].float(), values[3].long()
        step_dt = values[4].float() if euler else None
        self.passes.update(rows.ids)
        with self.timer.phase("denoise_s"):
            pred_cond, pred_uncond = self._predict(timesteps, [s.experts[i] for s, i in zip(schedules, index)])
        with self.timer.phase("guidance_s"):
            out, skipped, scores = self._update(pred_cond, pred_uncond, coefs, coef, level, step_dt)
            if not euler:  # every row shares the step: the batch started together
                out = self.family.scheduler_step(out, timesteps[0], rows.latents, schedules[0].start + index[0],
                                                 rows.generators)
            rows.latents = out
            rows.skipped += skipped.long()
            rows.guided += ((coef != 0) & ~skipped).long()
            rows.steps_done = [i + 1 for i in index]
            bad = ~torch.isfinite(rows.latents).flatten(1).all(1)
            rows.first_nonfinite = torch.where(bad & (rows.first_nonfinite == 0), taken, rows.first_nonfinite)
        return self._report(levels, coefs, skipped, scores)

    def _predict(self, timesteps: torch.Tensor, experts: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cond prediction of every row and the uncond one (cond itself for rows without CFG),
        one denoiser call per expert present (usually one), or per row of it (``batch_invariant``)."""
        rows, family, shape = self.rows, self.family, self.shape
        models = family.denoisers
        by_expert: dict[int, list[int]] = {}
        for row, expert in enumerate(experts):
            by_expert.setdefault(expert, []).append(row)
        batch = len(rows)
        position = {row: j for j, row in enumerate(rows.cfg_rows)}
        pred_cond = pred_uncond = None
        size = 1 if self.batch_invariant else batch
        calls = [(expert, group[i:i + size]) for expert, group in by_expert.items() for i in range(0, len(group), size)]
        # A denoiser call is work an unguided row does too: one row's share of it is a sample's reference.
        sample_rows = {sid: len(members) for sid, members in rows.groups().items()}
        for expert, members in calls:
            model = models[expert]
            whole = len(members) == batch
            idx = self._to_device(members)
            with self._adapters(members), self._cached(expert, members, "cond"), \
                    self.clock.charge([rows.ids[row] for row in members], sample_rows):
                cond = family.predict(model, rows.latents if whole else rows.latents[idx],
                                      timesteps if whole else timesteps[idx],
                                      rows.cond if whole else rows.cond.select(members), shape)
            if pred_cond is None:
                pred_cond = cond if whole else cond.new_empty((batch, *cond.shape[1:]))
            if not whole:
                pred_cond[idx] = cond
            cfg = [row for row in members if row in position]
            if rows.uncond is None or not cfg:
                continue
            with self._adapters(cfg), self._cached(expert, cfg, "uncond"), \
                    self.clock.charge([rows.ids[row] for row in cfg], sample_rows):
                uncond = family.predict(model, rows.latents[cfg], timesteps[cfg],
                                        rows.uncond.select([position[row] for row in cfg]), shape)
            if pred_uncond is None:
                pred_uncond = torch.empty_like(pred_cond)
            pred_uncond[self._to_device(cfg)] = uncond
        if pred_uncond is not None and len(rows.cfg_rows) < batch:
            # A row outside the CFG set gets uncond := cond and scale 1: exactly its cond prediction.
            plain = self._to_device([row for row in range(batch) if row not in position])
            pred_uncond[plain] = pred_cond[plain]
        return pred_cond, pred_uncond

    @contextmanager
    def _cached(self, expert: int, members: list[int], half: str) -> Iterator[None]:
        """One denoiser call of these rows (one CFG half) with their first-block cache thresholds; counts
        the calls whose later blocks the cache skipped (nothing to do when no row asks for caching)."""
        rows = self.rows
        thresholds = [rows.cache_thresholds[row] for row in members]
        if self.step_cache is None or not any(thresholds):
            yield
            return
        keys = [(rows.ids[row], half) for row in members]
        cache = self.step_cache.experts[expert]
        with cache.rows(keys, thresholds, lambda part: self._adapters([members[i] for i in part], members)) as skipped:
            yield
        self.cached_calls.update(rows.ids[members[i]] for i in skipped)

    def _leave(self, sample_ids: Collection[Hashable]) -> None:
        """Samples that left: their counts and step-cache states go (their ids never come back)."""
        for sid in sample_ids:
            self.passes.pop(sid, None)
            self.decodes.pop(sid, None)
            self.cached_calls.pop(sid, None)
        if self.step_cache is not None:
            self.step_cache.forget(sample_ids)

    def _adapters(self, members: list[int], within: list[int] | None = None):
        """Route each of these rows to its LoRA adapter for one denoiser call (nothing when none has one).
        ``within``: the rows of the call these are a subset of (the step cache's later blocks); their routing
        is then set even when none of ``members`` has an adapter, since the call's own is active around it."""
        rows = self.rows
        if self.loras is None or all(rows.adapters[row] < 0 for row in within or members):
            return nullcontext()
        return self.loras.routing(self._to_device([rows.adapters[row] for row in members]),
                                  self._to_device([rows.adapter_scales[row] for row in members], torch.float32))

    def _to_device(self, values: list, dtype: torch.dtype = torch.long, cache: bool = True) -> torch.Tensor:
        """``values`` as a tensor on the batch's device. Index tensors repeat from step to step while the
        membership holds, so they are kept (``cache``); on CUDA the copy is from pinned memory and does
        not block the host (``torch.tensor(list, device=cuda)`` waits for the device every time)."""
        key = (tuple(map(tuple, values)) if values and isinstance(values[0], list) else tuple(values), dtype)
        if cache and key in self._device_values:
            return self._device_values[key]
        tensor = torch.tensor(values, dtype=dtype)
        tensor = tensor.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else \
            tensor.to(self.device)
        if cache:
            if len(self._device_values) >= DEVICE_VALUES_KEPT:
                self._device_values.clear()
            self._device_values[key] = tensor
        return tensor

    def _update(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None, coefs: list[float],
                coef: torch.Tensor, level: torch.Tensor, step_dt: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Reward gradients of the rows guided at this step, then the fused step: one call per gradient
        mode among them and one gradient-free call for the rest. Returns the kernel's output (next
        latents, or the guided prediction for a scheduler's own step), skip flags [B] and, for the
        guided rows, their scores [B, K] (nan elsewhere)."""
        rows, device = self.rows, self.device
        batch = len(rows)
        guided = [row for row, c in enumerate(coefs) if c != 0]
        common = dict(pred_uncond=pred_uncond, cfg_scale=rows.cfg if pred_uncond is not None else None,
                      x=rows.latents if step_dt is not None else None, dt=step_dt)
        scores_all = None
        groups: list[tuple[list[int], str, torch.Tensor | None, torch.Tensor | None]] = []
        if guided and self.reward is not None:
            modes = list(dict.fromkeys(rows.guidance[row].mode for row in guided))
            # One backward pass of the weighted sum when every guided row is in mode sum, else one per
            # weighted objective (the kernel normalises and weights them).
            grad_mode = "sum" if modes == ["sum"] else "unit"
            whole = len(guided) == batch
            gidx = self._to_device(guided)
            weights = rows.weights if whole else rows.weights[gidx]
            # Each guided row's weighted objectives, read from the specs (no host sync): the backward
            # passes are as many as the most objectives one row weights.
            weighted = [[k for k, name in enumerate(self.objectives) if rows.guidance[row].weights.get(name, 0.0) != 0]
                        for row in guided]
            guided_cond = rows.cond if whole else rows.cond.select(guided)
            scores, grads = reward_and_gradients(
                self.reward, rows.latents if whole else rows.latents[gidx],
                level if whole else level[gidx],
                guided_cond, self.shape, weights, grad_mode, weighted=weighted,
                chunk_rows=self.reward_chunk_rows,
                timed=lambda chunk: self.clock.charge([rows.ids[guided[j]] for j in chunk]),
            )
            self._count_decodes(rows.ids[row] for row in guided)
            free = self.family.free_latents(guided_cond)
            if free is not None:  # latents an image holds fixed (LTX's first frame) take no push
                grads = grads * free.unsqueeze(1).to(grads.dtype)
            step_weights = torch.ones(len(guided), 1, device=device) if grad_mode == "sum" else weights
            scores_all = scores if whole else torch.full((batch, scores.shape[1]), float("nan"), device=device)
            if not whole:
                scores_all[gidx] = scores
            where = {row: j for j, row in enumerate(guided)}
            for mode in modes:
                members = [row for row in guided if rows.guidance[row].mode == mode]
                pick = self._to_device([where[row] for row in members]) if len(modes) > 1 else None
                groups.append((members, mode, grads if pick is None else grads[pick],
                               step_weights if pick is None else step_weights[pick]))
        unguided = [row for row in range(batch) if coefs[row] == 0 or self.reward is None]
        if unguided:
            groups.append((unguided, "sum", None, None))
        if self.batch_invariant:
            groups = [([row], mode, _row(grads, j), _row(weights, j))
                      for members, mode, grads, weights in groups for j, row in enumerate(members)]
        if len(groups) == 1:
            members, mode, grads, weights = groups[0]
            out, stats = guided_step(pred_cond, grads, weights, coef if grads is not None else None, mode=mode,
                                     **common)
            return out, stats.skipped, scores_all
        out, skipped = None, torch.zeros(batch, dtype=torch.bool, device=device)
        for members, mode, grads, weights in groups:
            idx = self._to_device(members)
            part = {name: None if value is None else value[idx] for name, value in common.items()}
            out_m, stats = guided_step(pred_cond[idx], grads, weights, coef[idx] if grads is not None else None,
                                       mode=mode, **part)
            if out is None:
                out = out_m.new_empty((batch, *out_m.shape[1:]))
            out[idx], skipped[idx] = out_m, stats.skipped
        return out, skipped, scores_all

    def _count_decodes(self, ids: Iterable[Hashable]) -> None:
        """Count a scoring of these rows' samples (one id per row) when the reward decodes to score."""
        if getattr(self.reward, "decodes", False):
            self.decodes.update(ids)

    def _report(self, levels: list[float], coefs: list[float], skipped: torch.Tensor,
                scores: torch.Tensor | None) -> list[SampleProgress]:
        """One row per sample (a search sample's particles by their first row), one host read; rewards
        for the samples guided at this step (the only ones scored)."""
        rows = self.rows
        first = rows.first_rows()
        idx = self._to_device(first)
        packed = skipped[idx].float().unsqueeze(1)
        if scores is not None:
            packed = torch.cat([packed, scores[idx].float()], dim=1)
        values = packed.tolist()
        report = []
        for row, value in zip(first, values):
            rewards = value[1:] if scores is not None and coefs[row] != 0 else None
            report.append(SampleProgress(rows.ids[row], rows.steps_done[row], rows.schedules[row].steps,
                                         levels[row], rewards, bool(value[0])))
        return report

    # -- leaving ----------------------------------------------------------------------------------
    @torch.no_grad()
    def pop_finished(self, decode: bool = True) -> SampleResult:
        """The finished samples leave: final rewards (t = 0), the best particle of search samples, and
        the frames (``decode=False`` skips decoding). Cancelled riders are dropped here."""
        done = set(self.finished())
        rows = self.rows
        part = rows.split([row for row, sid in enumerate(rows.ids) if sid in done])
        if self._dropped & done:
            part.keep([row for row, sid in enumerate(part.ids) if sid not in self._dropped])
            self._dropped -= done
        if not len(rows):
            self.rows = None
        kept = part.groups()
        passes = [self.passes[sid] for sid in kept]
        self.clock.drop([sid for sid in done if sid not in kept])
        if not len(part):
            self._leave(done)
            return SampleResult(None, part.latents, None, self.objectives, [], [], [], self.timer.totals())
        part.latents = self.family.final_latents(part.latents, part.cond)
        final_rewards = frames = None
        if hasattr(self.reward, "score_frames"):
            # A judge's final score is of the video the sample returns: one decode serves both, and a
            # search sample's losing particles cost one decode each.
            frames = self._decode_all(part)
            final_rewards = self._final_scores(frames, part.cond)
            self._count_decodes(sid for sid, rows in Counter(part.ids).items() for _ in range(rows - 1))
            kept_rows = search.finish(part, (final_rewards * part.weights).sum(dim=1))
            final_rewards, frames = final_rewards[kept_rows], frames[kept_rows] if decode else None
        elif self.reward is not None:
            t_zero = torch.zeros(len(part), device=self.device)
            final_rewards = self.scorer(part.latents.float(), t_zero, part.cond, self.shape).float()
            self._count_decodes(part.ids)
            final_rewards = final_rewards[search.finish(part, (final_rewards * part.weights).sum(dim=1))]
        decodes = [self.decodes[sid] for sid in part.groups()]
        cached = [self.cached_calls[sid] for sid in part.groups()]
        self._leave(done)
        if decode and frames is None:
            frames = self._decode_all(part)
        return SampleResult(
            frames=frames,
            latents=part.latents,
            rewards=final_rewards,
            objectives=self.objectives,
            ids=list(part.ids),
            skipped_steps=part.skipped.tolist(),
            guided_steps=part.guided.tolist(),
            timings=self.timer.totals(),
            denoiser_passes=passes,
            nonfinite_steps=part.first_nonfinite.tolist(),
            guidance_decodes=decodes,
            row_seconds=self.clock.take(part.ids),
            cached_calls=cached,
        )

    def _decode_all(self, part: BatchRows) -> torch.Tensor:
        """Frames of the finished rows (a video VAE's decoder holds gigabytes of activations per sample:
        ``DECODE_CHUNK_ROWS`` at a time), charged to them as work an unguided row does too (a sample's
        particles share one row's reference)."""
        rows_of = Counter(part.ids)
        frames = []
        with self.timer.phase("decode_s"):
            for start in range(0, len(part), DECODE_CHUNK_ROWS):
                ids = part.ids[start:start + DECODE_CHUNK_ROWS]
                with self.clock.charge(ids, {sid: rows_of[sid] for sid in ids}):
                    frames.append(self.family.decode(part.latents[start:start + DECODE_CHUNK_ROWS], self.shape,
                                                     part.generators[start:start + DECODE_CHUNK_ROWS]))
        return torch.cat(frames)

    def _final_scores(self, frames: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        """The reward's scores of final frames: in one call, or one row per call (``batch_invariant``)."""
        score = self.reward.score_frames
        if not self.batch_invariant:
            return score(frames, cond).float()
        return torch.cat([score(frames[row:row + 1], cond.select([row])) for row in range(len(frames))]).float()

    # -- joining ----------------------------------------------------------------------------------
    def _encode(self, prompts: list[str], negatives: list[str] | None,
                ) -> tuple[TextConditioning, TextConditioning | None]:
        """The text encoder's conditioning of these prompts: in one call, or one call per prompt
        (``batch_invariant``)."""
        if not self.batch_invariant or len(prompts) == 1:
            return self.family.encode_prompts(prompts, negatives)
        parts = [self.family.encode_prompts([p], None if negatives is None else [negatives[i]])
                 for i, p in enumerate(prompts)]
        cond, uncond = parts[0]
        for c, u in parts[1:]:
            cond = cond.cat(c)
            uncond = None if uncond is None else uncond.cat(u)
        return cond, uncond

    def _new_rows(self, specs: Sequence[SampleSpec], schedule: Schedule, ids: list[Hashable],
                  starts: list[int]) -> BatchRows:
        """Encode the prompts, then draw the noise of every row (a search sample's particles one after
        the other from its own generator); a video's rows start from it (:meth:`_start_from_videos`)
        on the schedule truncated at their start."""
        family, device, objectives = self.family, self.device, self.objectives
        cfg_scales = [family.default_cfg if s.cfg_scale is None else float(s.cfg_scale) for s in specs]
        cfg_rows = [i for i, c in enumerate(cfg_scales) if family.uses_cfg(c)]
        negatives = [s.negative_prompt or "" for s in specs] if cfg_rows else None
        cond, uncond = self._encode([s.prompt for s in specs], negatives)
        cond = replace(cond, texts=tuple(s.prompt for s in specs))
        generators = [torch.Generator("cpu").manual_seed(int(s.seed)) for s in specs]
        images = [s.image for s in specs]
        conditioned = any(image is not None for image in images) or family.image_input == "required"
        if conditioned:
            # Image-to-video: the image's conditioning rides with the prompt's, cond and uncond alike.
            family.check_images([image is not None for image in images])
            image_cond = family.encode_images_one_by_one(images, self.shape, generators)
            has_image = tuple(image is not None for image in images)
            cond = cond.with_image(image_cond, has_image)
            uncond = None if uncond is None else uncond.with_image(image_cond, has_image)
        if uncond is not None and len(cfg_rows) < len(specs):
            uncond = uncond.select(cfg_rows)
        # Scale 0 is the base model: no adapter at all, so its output is the base one exactly.
        adapters = [self.loras.index(s.lora) if s.lora is not None and s.lora_scale != 0 else -1 for s in specs]
        scales = [float(s.lora_scale) for s in specs]
        if self.loras is not None:
            # The rows' adapters ride with the conditioning into the reward's clean estimate (a judge's).
            cond = replace(cond, adapters=RowAdapters(tuple(adapters), tuple(scales), self.loras.routing))
        guidance = [s.guidance for s in specs]
        zeros = [0.0] * len(objectives)
        vectors = [g.weight_vector(objectives) if g else zeros for g in guidance]
        batch = len(specs)
        schedules = [schedule.truncated(start) for start in starts]
        rows = BatchRows(
            ids=list(ids),
            latents=torch.empty(batch, 0, device=device),
            cond=cond,
            uncond=uncond,
            cfg_rows=cfg_rows,
            # A sample outside the CFG set gets uncond := cond and scale 1: exactly its cond prediction.
            cfg=torch.tensor([c if i in cfg_rows else 1.0 for i, c in enumerate(cfg_scales)], device=device),
            weights=torch.tensor(vectors, dtype=torch.float32, device=device).reshape(batch, len(objectives)),
            guidance=guidance,
            generators=generators,
            schedules=schedules,
            # On a truncated schedule only the part of a window below the sample's start is guided.
            coefs=[s.coefficients(g, self.max_ratio) for s, g in zip(schedules, guidance)],
            steps_done=[0] * batch,
            adapters=adapters,
            adapter_scales=scales,
            # A search sample's particles share its id, so they would share states: never cached.
            cache_thresholds=[0.0 if g is not None and g.search else s.cache_threshold
                              for s, g in zip(specs, guidance)],
            skipped=torch.zeros(batch, dtype=torch.long, device=device),
            guided=torch.zeros(batch, dtype=torch.long, device=device),
            first_nonfinite=torch.zeros(batch, dtype=torch.long, device=device),
            log_weights=torch.zeros(batch, device=device),
            last_scores=torch.zeros(batch, device=device),
        )
        particles = search.particle_rows(guidance)
        if len(particles) > batch:
            rows.take(particles)
        if conditioned:
            rows.latents = family.prepare_conditioned_latents(self.shape, rows.generators, rows.cond)
        else:
            rows.latents = family.prepare_latents(self.shape, rows.generators)
        if any(spec.video is not None for spec in specs):
            self._start_from_videos(rows, specs, particles)
        return rows

    def _start_from_videos(self, rows: BatchRows, specs: Sequence[SampleSpec], samples: list[int]) -> None:
        """Video-to-video (SDEdit): each video's clean latents (its posterior mode, one video per encoder
        call) noised with the noise its rows just drew to the noise level of their first step, as
        diffusers' ``WanVideoToVideoPipeline`` does (``scale_noise``: sigma noise + (1 - sigma) x0).
        ``samples[row]`` is the position in ``specs`` of each row (a search sample's particles share one
        video and draw their own noise)."""
        for i, spec in enumerate(specs):
            if spec.video is None:
                continue
            members = [row for row, sample in enumerate(samples) if sample == i]
            clean = self.family.encode_video(spec.video, self.shape).to(rows.latents.device)
            index = self._to_device(members, cache=False)
            level = torch.full((len(members),), rows.schedules[members[0]].noise_levels[0], dtype=torch.float32)
            noisy = self.family.add_noise(clean.expand(len(members), *clean.shape[1:]), rows.latents[index], level)
            rows.latents[index] = noisy.to(rows.latents.dtype)

