"""``nrg eval --checkpoint NAME=DIR``: aligned checkpoints against the base model, with and without
guidance, on the demo world's ground truth.

Every configuration samples the same held-out (prompt, seed) items from the same initial noise:
``base``, each checkpoint alone, and (with a guidance setting) ``base + guidance`` and each
``checkpoint + guidance``. Paired comparisons, per objective, with the statistics of ``nrg eval``
(wins and losses of decisive pairs, ties below the labelling margin, the 95% Wilson interval and the
sign test; ``stats``):

* checkpoint vs base (what alignment alone does),
* checkpoint + guidance vs checkpoint (what guidance adds on top of alignment),
* checkpoint + guidance vs base + guidance (what alignment adds on top of guidance),
* base + guidance vs base (guidance alone, for reference).

Seeds: the report range (``world.EVAL_SEED_BASE + j``) by default; ``seed_set="tune"`` uses the
tuning range, for choosing training settings without looking at the report's seeds. The
checkpoints are switched in place by the server's own :class:`CheckpointRegistry`.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping
from pathlib import Path

from demo_world import world
from demo_world.evaluate import DEFAULT_SEEDS, TUNE_SEED_BASE, device_text, means, parse_setting, win_cell
from demo_world.metrics import METRICS_VERSION, OBJECTIVES, evaluate
from demo_world.pairs import TIE_MARGIN
from guidance.win_rates import win_rate

BASE = "base"
SEED_SETS = {"report": world.EVAL_SEED_BASE, "tune": TUNE_SEED_BASE}


def _label(checkpoint: str | None, guided: bool) -> str:
    return (checkpoint or BASE) + (" + guidance" if guided else "")


def comparisons(checkpoints: list[str], guided: bool) -> list[tuple[str, str]]:
    """(config, against) pairs of the report, in order."""
    rows = [(_label(name, False), BASE) for name in checkpoints]
    if guided:
        rows += [(_label(name, True), _label(name, False)) for name in checkpoints]
        rows += [(_label(name, True), _label(None, True)) for name in checkpoints]
        rows.append((_label(None, True), BASE))
    return rows


def run_checkpoint_eval(
    checkpoints: Mapping[str, str | Path],
    model: str | Path | None = None,
    reward: str | Path | None = None,
    setting: str | None = "0:1:0",
    strength: float | None = None,
    prompts: int | None = None,
    seeds: int = DEFAULT_SEEDS,
    seed_set: str = "report",
    steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Sample every configuration, score it with the ground-truth metrics and compare (module doc)."""
    import torch
    from tqdm.auto import tqdm

    from guidance.checkpoints import CheckpointRegistry
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.nrg import defaults_for
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample

    if not checkpoints:
        raise ValueError("give at least one --checkpoint NAME=DIR to compare")
    if BASE in checkpoints:
        raise ValueError(f"{BASE!r} names the base model; give the checkpoint another name")
    if seed_set not in SEED_SETS:
        raise ValueError(f"--checkpoint-seeds must be one of {', '.join(SEED_SETS)}; got {seed_set!r}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    if setting is not None:
        parse_setting(setting)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = steps or DEFAULT_STEPS
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    reward_model = load_reward_model(reward or DEFAULT_REWARD_DIR, family)  # before the registry (base trunk)
    registry = CheckpointRegistry(family, checkpoints)
    defaults = defaults_for(reward_model)
    guidance = None if setting is None else defaults.complete(parse_setting(setting), strength)
    chosen = world.eval_prompts()
    if prompts is not None:
        if not 1 <= prompts <= len(chosen):
            raise ValueError(f"--prompts must be between 1 and {len(chosen)}; got {prompts}")
        chosen = chosen[:prompts]
    seed_base = SEED_SETS[seed_set]
    items = [(p.text, seed_base + j) for j in range(seeds) for p in chosen]
    names = list(checkpoints)
    configs = [(None, False)] + [(n, False) for n in names]
    if guidance is not None:
        configs += [(None, True)] + [(n, True) for n in names]

    load_before = os.getloadavg()[0]
    scores: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    for name, guided in tqdm(configs, desc="eval", unit="config", disable=not progress):
        registry.activate(name)
        specs = [SampleSpec(text, seed=seed, guidance=guidance if guided else None) for text, seed in items]
        start = time.perf_counter()
        out = sample(family, specs, DEFAULT_SHAPE, steps, reward_model)
        label = _label(name, guided)
        seconds[label] = (time.perf_counter() - start) / len(items)
        frames = out.frames.float().cpu().numpy()
        scores[label] = [evaluate(clip, text) for clip, (text, _) in zip(frames, items)]
    registry.activate(None)

    rows = []
    for label, against in comparisons(names, guidance is not None):
        rows.append({"config": label, "against": against, "stats": head_to_head(scores, label, against),
                     "means": means(scores[label]), "against_means": means(scores[against])})
    return {
        "command": command,
        "device": device_text(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": str(model or DEFAULT_MODEL_DIR),
        "reward": str(reward or DEFAULT_REWARD_DIR),
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "guidance": None if guidance is None else {"weights": setting, "strength": guidance.strength,
                                                   "mode": guidance.mode, "window": list(guidance.window)},
        "steps": steps, "cfg": family.default_cfg, "objectives": list(OBJECTIVES),
        "prompts": [p.text for p in chosen], "seeds": [seed_base + j for j in range(seeds)], "seed_set": seed_set,
        "clips_per_config": len(items), "tie_margin": TIE_MARGIN, "metrics_version": METRICS_VERSION,
        "load_average": [load_before, os.getloadavg()[0]],
        "means": {label: means(s) for label, s in scores.items()},
        "seconds_per_clip": seconds,
        "rows": rows,
        "per_clip": scores,
    }


def head_to_head(per_clip: Mapping[str, list[dict]], config: str, against: str) -> dict:
    """Per-objective win rate (JSON) of ``config`` over ``against`` on the same (prompt, seed) items."""
    return {o: win_rate([a[o] - b[o] for a, b in zip(per_clip[config], per_clip[against])], TIE_MARGIN[o]).to_json()
            for o in OBJECTIVES}


def format_checkpoint_table(report: dict) -> str:
    """Markdown: per comparison, win rate % [95% CI] wins/decisive p on each objective; then means."""
    lines = ["| config | against | win VQ | win MQ | win TA |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        cells = " | ".join(win_cell(row["stats"][o]) for o in OBJECTIVES)
        lines.append(f"| {row['config']} | {row['against']} | {cells} |")
    lines += ["", "| config | mean VQ | mean MQ | mean TA | s/clip |", "|---|---|---|---|---|"]
    for label, avg in report["means"].items():
        lines.append(f"| {label} | {avg['vq']:.3f} | {avg['mq']:.3f} | {avg['ta']:.3f} | "
                     f"{report['seconds_per_clip'][label]:.2f} |")
    lines.append("")
    lines.append("Win cells: win rate % [95% Wilson interval] wins/decisive pairs, two-sided sign-test p; a pair is "
                 f"one (prompt, seed) under both configs, decisive when they differ by >= {report['tie_margin']}.")
    return "\n".join(lines)


def checkpoint_benchmark_section(report: dict) -> str:
    g = report["guidance"]
    guidance = "none" if g is None else f"{g['weights']} at strength {g['strength']:g}, mode {g['mode']}, window {g['window']}"
    return "\n".join([
        f"## Aligned checkpoints on the demo world (`nrg eval --checkpoint`), {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}; 1-min load average before / after: "
        f"{report['load_average'][0]:.2f} / {report['load_average'][1]:.2f}",
        f"- checkpoints: {', '.join(f'{k} = `{v}`' for k, v in report['checkpoints'].items())}; guidance: {guidance}",
        f"- {report['clips_per_config']} clips per config ({len(report['prompts'])} held-out prompts x "
        f"{len(report['seeds'])} {report['seed_set']} seeds {report['seeds'][0]}..{report['seeds'][-1]}), "
        f"{report['steps']} steps, CFG {report['cfg']:g}; ground-truth metrics (demo_world.metrics)",
        "",
        format_checkpoint_table(report),
        "",
    ])
