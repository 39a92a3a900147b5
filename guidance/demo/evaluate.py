"""``nrg eval``: Flow-NRG against the demo world's ground truth, in the form of REFERENCE §2.2.

For every weight setting VQ:MQ:TA and every strength, each held-out (prompt, seed) is sampled guided
and unguided from the same noise. Reported per row: the ground-truth VQ, MQ, TA means of the guided
clips, the win rate against the unguided clip of the same prompt and seed (wins / (wins + losses);
pairs whose scores differ by less than the labelling margin ``pairs.TIE_MARGIN`` are ties and left
out), and seconds per clip. Every configuration is one batch of all its clips, so the times compare.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from guidance.demo import world
from guidance.demo.metrics import OBJECTIVES, evaluate
from guidance.demo.pairs import TIE_MARGIN

DEFAULT_SETTINGS = ("0:0:1", "0.1:0.1:0.8", "0.5:0.5:0", "1:1:1")
DEFAULT_STRENGTHS = (3.0, 10.0)
DEFAULT_SEEDS = 6


def parse_setting(text: str) -> dict[str, float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"a weight setting is VQ:MQ:TA, e.g. 0.1:0.1:0.8; got {text!r}")
    try:
        return dict(zip(OBJECTIVES, (float(p) for p in parts)))
    except ValueError:
        raise ValueError(f"a weight setting is VQ:MQ:TA with numbers; got {text!r}") from None


def device_text(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"


def run_eval(
    model: str | Path | None = None,
    reward: str | Path | None = None,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    prompts: int | None = None,
    seeds: int = DEFAULT_SEEDS,
    steps: int | None = None,
    window: tuple[float, float] = (0.0, 1.0),
    mode: str = "sum",
    device: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    import torch
    from tqdm.auto import tqdm

    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.nrg import GuidanceSpec
    from guidance.reward_model import load_reward_model
    from guidance.sampler import SampleSpec, sample

    parsed = [parse_setting(s) for s in settings]
    if not parsed:
        raise ValueError("give at least one weight setting")
    if not strengths or any(not (w >= 0 and w < float("inf")) for w in strengths):
        raise ValueError(f"strengths must be finite numbers >= 0; got {list(strengths)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = steps or DEFAULT_STEPS
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    reward_model = load_reward_model(reward or DEFAULT_REWARD_DIR, family)
    missing = [o for o in OBJECTIVES if o not in reward_model.objectives]
    if missing:
        raise ValueError(f"the reward model lacks objective(s) {missing}; it has {list(reward_model.objectives)}")
    chosen = world.eval_prompts()
    if prompts is not None:
        if not 1 <= prompts <= len(chosen):
            raise ValueError(f"--prompts must be between 1 and {len(chosen)}; got {prompts}")
        chosen = chosen[:prompts]
    items = [(p.text, world.EVAL_SEED_BASE + j) for p in chosen for j in range(seeds)]
    configs = [(None, 0.0)] + [(s, float(w)) for s in settings for w in strengths]

    # Warm-up (first-call allocations, lazy inits) so that no row's time includes it.
    warm = GuidanceSpec(parse_setting(configs[-1][0]), configs[-1][1], window, mode) if len(configs) > 1 else None
    sample(family, [SampleSpec(items[0][0], seed=items[0][1], guidance=warm)], DEFAULT_SHAPE, 2, reward_model)

    load_before = os.getloadavg()[0]
    results: dict[tuple, dict] = {}
    for setting, strength in tqdm(configs, desc="eval", unit="config", disable=not progress):
        guidance = None if setting is None else GuidanceSpec(parse_setting(setting), strength, window, mode)
        specs = [SampleSpec(text, seed=seed, guidance=guidance) for text, seed in items]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = sample(family, specs, DEFAULT_SHAPE, steps, reward_model)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        scores = [evaluate(frames, text) for frames, (text, _) in zip(out.frames, items)]
        results[(setting, strength)] = {"scores": scores, "seconds_per_clip": seconds / len(items),
                                        "skipped_steps": int(sum(out.skipped_steps))}

    base = results[(None, 0.0)]
    def means(scores):
        return {o: float(np.mean([s[o] for s in scores])) for o in OBJECTIVES}

    rows = []
    for setting, strength in configs[1:]:
        res = results[(setting, strength)]
        wins, losses, ties = {}, {}, {}
        for o in OBJECTIVES:
            diff = np.array([g[o] - u[o] for g, u in zip(res["scores"], base["scores"])])
            decisive = np.abs(diff) >= TIE_MARGIN[o]
            wins[o], losses[o] = int((decisive & (diff > 0)).sum()), int((decisive & (diff < 0)).sum())
            ties[o] = int((~decisive).sum())
        rows.append({
            "weights": setting, "strength": strength, **means(res["scores"]),
            "win_rate": {o: (wins[o] / (wins[o] + losses[o]) if wins[o] + losses[o] else None) for o in OBJECTIVES},
            "wins": wins, "losses": losses, "ties": ties,
            "seconds_per_clip": res["seconds_per_clip"], "skipped_steps": res["skipped_steps"],
        })
    report = {
        "command": command,
        "device": device_text(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": str(model or DEFAULT_MODEL_DIR),
        "reward": str(reward or DEFAULT_REWARD_DIR),
        "steps": steps, "cfg": family.default_cfg, "window": list(window), "mode": mode,
        "prompts": [p.text for p in chosen], "seeds": [world.EVAL_SEED_BASE + j for j in range(seeds)],
        "settings": list(settings), "strengths": [float(w) for w in strengths],
        "clips_per_row": len(items), "tie_margin": TIE_MARGIN,
        "load_average": [load_before, os.getloadavg()[0]],
        "unguided": {**means(base["scores"]), "seconds_per_clip": base["seconds_per_clip"]},
        "rows": rows,
        "per_clip": {"unguided": base["scores"],
                     **{f"{s}@{w:g}": results[(s, w)]["scores"] for s, w in configs[1:]}},
    }
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(report: dict) -> str:
    """The REFERENCE §2.2-style table (win rates in %, means of ground-truth scores)."""
    u = report["unguided"]
    lines = [
        "| VQ:MQ:TA | strength | win VQ | win MQ | win TA | mean VQ | mean MQ | mean TA | s/clip |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| unguided | 0 | - | - | - | {u['vq']:.3f} | {u['mq']:.3f} | {u['ta']:.3f} | {u['seconds_per_clip']:.3f} |",
    ]
    for r in report["rows"]:
        wr = r["win_rate"]
        lines.append(
            f"| {r['weights']} | {r['strength']:g} | {_pct(wr['vq'])} | {_pct(wr['mq'])} | {_pct(wr['ta'])} | "
            f"{r['vq']:.3f} | {r['mq']:.3f} | {r['ta']:.3f} | {r['seconds_per_clip']:.3f} |"
        )
    lines.append("")
    lines.append("Non-tied pairs per row (VQ/MQ/TA): " + "; ".join(
        f"{r['weights']}@{r['strength']:g}: " + "/".join(str(r["wins"][o] + r["losses"][o]) for o in OBJECTIVES)
        for r in report["rows"]))
    return "\n".join(lines)


def benchmark_section(report: dict) -> str:
    return "\n".join([
        f"## Flow-NRG on the demo world (`nrg eval`), {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}; 1-min load average before / after: "
        f"{report['load_average'][0]:.2f} / {report['load_average'][1]:.2f} (the cores are shared with other jobs)",
        f"- date: {report['date']}",
        f"- settings (VQ:MQ:TA): {', '.join(report['settings'])}; strengths: "
        f"{', '.join(f'{w:g}' for w in report['strengths'])}",
        f"- {report['clips_per_row']} clips per row ({len(report['prompts'])} held-out prompts x "
        f"{len(report['seeds'])} seeds), {report['steps']} steps, CFG {report['cfg']:g}, window "
        f"{report['window']}, mode {report['mode']}; win rate = wins / non-tied pairs against the unguided "
        f"clip of the same prompt and seed (tie margins {report['tie_margin']}); means are ground-truth "
        "scores (guidance.demo.metrics)",
        "",
        format_table(report),
        "",
    ])


BENCHMARKS_HEADER = """# Benchmarks

Every figure in this file comes with the exact command that produced it, the device it ran on and
the date. Append new measurements; do not rewrite other sections.
"""


def append_benchmarks(path: str | Path, report: dict) -> Path:
    path = Path(path)
    text = path.read_text() if path.is_file() else BENCHMARKS_HEADER
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n" + benchmark_section(report))
    return path


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "nrg " + " ".join(shlex.quote(a) for a in args)


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path
