"""The ``nrg align`` training loop, the same for every method.

The method's task (:mod:`guidance.align.methods`: a :class:`~guidance.align.task.Task` its factory
builds) gives the training items and each minibatch's loss; the loop draws the minibatches (items
of one latent shape together), steps AdamW on the LoRA parameters only, evaluates the held-out
pairs, saves its state and writes the LoRA and ``align_report.json``. Flow-DPO's step, for one: a
minibatch of pairs oriented winner first, one t ~ U(t_min, t_max) and one noise tensor per pair
shared by winner and loser, the reference errors with the adapter disabled, the policy errors of
winners and losers in one forward pass, the loss of ``losses.flow_dpo_loss``.

Determinism and resuming: the minibatches of epoch e are a permutation drawn from a generator seeded
by (seed, e), and the t and noise of step s from one seeded by (seed, s), all on the CPU. So a step
depends only on the seed, the step number and the weights, and a run resumed from its saved state
(``align_state/``: adapter, AdamW moments, progress) continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from guidance.align.config import RESUMABLE_CHANGES, AlignConfig
from guidance.align.data import parse_objective_weights
from guidance.align.lora import (
    attach_lora,
    lora_parameters,
    load_state,
    read_progress,
    save_lora,
    save_state,
)
from guidance.align.methods.base import TaskInputs
from guidance.align.methods.frame_judge import FrameJudge
from guidance.align.methods.registry import REGISTRY
from guidance.align.report import REPORT_NAME, HeldOutPairs, ImplicitAccuracy, format_accuracy
from guidance.align.scored_clips import ScoredClips
from guidance.align.task import Task, derived_seed
from guidance.families.base import PipelineFamily
from guidance.reward_model import transformer_fingerprint
from guidance.train.preference_data import PreferenceData
from guidance.train.reward import PromptCache

#: Sub-directory of the output that holds ``--snapshot-every``'s part-way LoRAs.
SNAPSHOTS = "snapshots"


@dataclass
class AlignResult:
    report: dict[str, Any]
    out_dir: Path
    step_losses: list[float] = field(default_factory=list)


def epoch_batches(keys: Sequence[Any], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Minibatches (positions into ``keys``) of items with equal keys (one latent shape), shuffled
    within each key and between batches by a generator of (seed, epoch)."""
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch, 0xBA7C4))
    groups: dict[Any, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    batches = []
    for members in groups.values():
        members = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        batches += [members[k:k + batch] for k in range(0, len(members), batch)]
    return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]


def _check_resume(progress: dict[str, Any], config: AlignConfig, fingerprint: str, out: Path) -> None:
    saved = progress["config"]
    current = config.settings()
    differing = [f"{k}: {saved.get(k)!r} (now {current[k]!r})" for k in current
                 if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if differing:
        raise ValueError(f"--resume: {out} was trained with other settings: " + "; ".join(differing))
    if progress["fingerprint"] != fingerprint:
        raise ValueError(f"--resume: {out} was trained on another base model (fingerprint {progress['fingerprint']}, "
                         f"now {fingerprint})")


def make_task(family: PipelineFamily, data: PreferenceData | ScoredClips, config: AlignConfig, weights: dict[str, float],
              prompts: PromptCache, eval_pairs: PreferenceData | None = None,
              frame_judge: FrameJudge | None = None) -> tuple[Task, HeldOutPairs, dict[str, Any]]:
    """The method's task on ``data``, the held-out pairs and the report's data summary (built by the
    method's factory, :attr:`guidance.align.methods.base.Method.task`)."""
    return REGISTRY[config.method].build(TaskInputs(family, data, config, weights, prompts, eval_pairs, frame_judge))


def align(
    family: PipelineFamily,
    data: PreferenceData | ScoredClips,
    config: AlignConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    eval_pairs: PreferenceData | None = None,
    model_path: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    stop_after: int | None = None,
    frame_judge: FrameJudge | None = None,
) -> AlignResult:
    """Train a LoRA on ``family``'s transformer (see the module docstring) and write it to ``out_dir``
    with ``align_report.json``; the state for ``resume`` is saved every ``save_every`` steps.

    ``data``: what the method trains on, preference pairs or scored clips (``Method.data``). Held-out
    implicit accuracy is measured on the test pairs of ``data`` (the methods on pairs) or of
    ``eval_pairs`` (the methods on clips; without it, the data's test pairs, or pairs of held-out
    scored clips). ``frame_judge`` scores SPRO's samples under ``--judge demo``
    (guidance has no world of its own to judge by; a run that needs one and has none fails before
    training). ``stop_after`` ends the run after that many steps of this call,
    with its state saved but no LoRA written (to test resuming). The adapter stays on the
    transformer, trained, when this returns.
    """
    from tqdm.auto import tqdm

    config.validate()
    say = log or (lambda _: None)
    out = Path(out_dir)
    start_time = time.perf_counter()
    weights = parse_objective_weights(config.objectives, data.objectives)
    prompts = PromptCache(family)
    fingerprint = transformer_fingerprint(family.name, family.transformer)

    task, held_out, data_info = make_task(family, data, config, weights, prompts, eval_pairs, frame_judge)

    steps_per_epoch = len(epoch_batches(task.keys, config.batch, config.seed, 0))
    total = config.steps if config.steps is not None else steps_per_epoch * (config.epochs or 1)
    eval_every = config.eval_every or max(1, total // 10)
    save_every = config.save_every or eval_every
    task.total = total
    budget_spent = _budget_check(config)

    params = attach_lora(family, config.lora_rank, config.lora_alpha, config.targets, config.seed)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state: dict[str, Any] = {"step": 0, "losses": [], "train_accuracy": [], "evaluations": [], "seconds": 0.0,
                             "cpu_seconds": 0.0, "resumed_at": []}
    if resume:
        saved = read_progress(out)
        if saved is None:
            raise FileNotFoundError(f"--resume: {out} has no saved state ({out / 'align_state'})")
        _check_resume(saved, config, fingerprint, out)
        load_state(out, family, optimizer)
        state = {k: saved.get(k, v) for k, v in state.items()}
        state["resumed_at"].append(state["step"])
        say(f"resuming {out} at step {state['step']} of {total}")
    trained, all_params = sum(p.numel() for p in params), sum(p.numel() for p in family.transformer.parameters())
    say(f"{config.method} on {', '.join(f'{k}={v:g}' for k, v in weights.items())}: LoRA r={config.lora_rank} "
        f"alpha={config.lora_alpha:g} on {','.join(config.targets)} ({trained:,} of {all_params:,} parameters trained); "
        f"{len(task.keys)} training items, {steps_per_epoch} steps per epoch, {total} steps; {len(held_out)} held-out pairs")
    accuracy = ImplicitAccuracy(family, held_out, prompts, config.batch)

    def save(progress_seconds: float) -> None:
        out.mkdir(parents=True, exist_ok=True)
        save_state(out, family, optimizer, {**state, "seconds": progress_seconds, "config": config.settings(),
                                            "fingerprint": fingerprint})

    family.transformer.train()
    bar = tqdm(total=total, initial=state["step"], desc=config.method, unit="step", disable=not progress)
    last_eval = state["evaluations"][-1]["accuracy"] if state["evaluations"] else None
    ran = 0
    session_start = time.perf_counter() - state["seconds"]
    while state["step"] < total and (stop_after is None or ran < stop_after) and not budget_spent(state):
        step = state["step"]
        cpu_before = time.process_time()
        batches = epoch_batches(task.keys, config.batch, config.seed, step // steps_per_epoch)
        loss, train_acc = task.loss(step, batches[step % steps_per_epoch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        task.after_step(step)
        state["cpu_seconds"] += time.process_time() - cpu_before
        state["losses"].append(float(loss.detach()))
        if train_acc is not None:
            state["train_accuracy"].append(train_acc)
        state["step"] = step + 1
        ran += 1
        last = state["step"] == total or budget_spent(state)
        if state["step"] % eval_every == 0 or last:
            family.transformer.eval()
            result = accuracy()
            family.transformer.train()
            if result is not None:
                state["evaluations"].append({"step": state["step"], **result})
                last_eval = result["accuracy"]
        if config.snapshot_every and state["step"] % config.snapshot_every == 0 and state["step"] < total:
            save_lora(family, snapshot_dir(out, state["step"]))
        if state["step"] % save_every == 0 or last:
            save(time.perf_counter() - session_start)
        window = state["losses"][-50:]
        postfix = {"loss": f"{sum(window) / len(window):.4f}"}
        if last_eval is not None:
            postfix["heldout_acc"] = f"{100 * last_eval:.1f}%"
        if state["train_accuracy"]:
            recent = state["train_accuracy"][-50:]
            postfix["train_acc"] = f"{100 * sum(recent) / len(recent):.1f}%"
        bar.set_postfix(postfix)
        bar.update(1)
    bar.close()
    family.transformer.eval()
    if budget_spent(state) and state["step"] < total:
        say(f"CPU budget of {config.cpu_budget_s:g} s spent after {state['step']} of at most {total} steps")
        total = state["step"]
    if state["step"] < total:
        save(time.perf_counter() - session_start)
        say(f"stopped at step {state['step']} of {total}; state saved in {out} (--resume continues)")
        return AlignResult({}, out, state["losses"])

    final = state["evaluations"][-1] if state["evaluations"] else None
    say(format_accuracy(final))
    save_lora(family, out)
    report = {
        "format_version": 1,
        "method": config.method,
        "family": family.name,
        "base_model": {"path": None if model_path is None else str(Path(model_path).resolve()),
                       "fingerprint": fingerprint, "transformer_class": type(family.transformer).__name__},
        "data": {"root": None if data.root is None else str(data.root.resolve()), "description": data.description,
                 "objectives": weights, **data_info},
        "args": {**config.settings(), "steps": total, "eval_every": eval_every,
                 "save_every": save_every,
                 "snapshots": sorted(p.name for p in (out / SNAPSHOTS).glob("step_*"))},
        "lora": {"rank": config.lora_rank, "alpha": config.lora_alpha, "targets": list(config.targets),
                 "trained_parameters": trained, "layers": len(lora_parameters(family)) // 2},
        "steps": total,
        "steps_per_epoch": steps_per_epoch,
        "cpu_seconds": round(state["cpu_seconds"], 3),
        "loss": state["losses"],
        "loss_curve": _curve(state["losses"], eval_every),
        "train_accuracy_curve": _curve(state["train_accuracy"], eval_every),
        "implicit_accuracy": final,
        "evaluations": state["evaluations"],
        "resumed_at": state["resumed_at"],
        "seconds": round(time.perf_counter() - session_start, 3),
        "seconds_this_session": round(time.perf_counter() - start_time, 3),
        "device": str(family.device),
        "dtype": str(family.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    (out / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
    say(f"wrote the LoRA and {REPORT_NAME} to {out}")
    return AlignResult(report, out, state["losses"])


def _budget_check(config: AlignConfig) -> Callable[[dict[str, Any]], bool]:
    """Whether a run's training steps spent ``--cpu-budget`` (never before its first step)."""
    return lambda state: (config.cpu_budget_s is not None and state["step"] > 0
                          and state["cpu_seconds"] >= config.cpu_budget_s)


def snapshot_dir(out_dir: str | Path, step: int) -> Path:
    """Where ``--snapshot-every`` writes the LoRA of ``step`` (a checkpoint directory of its own, so
    ``nrg eval --checkpoint`` can judge the run part-way; the final LoRA stays in ``out_dir``)."""
    return Path(out_dir) / SNAPSHOTS / f"step_{step:06d}"


def _curve(values: list[float], every: int) -> list[dict[str, float]]:
    """Means of consecutive windows of ``every`` steps: ``[{"step": last step, "mean": ...}]``."""
    return [{"step": min(k + every, len(values)), "mean": sum(values[k:k + every]) / len(values[k:k + every])}
            for k in range(0, len(values), every)]
