"""``nrg eval``: Flow-NRG against the demo world's ground truth, as win rates of guided over unguided clips.

For every weight setting VQ:MQ:TA and every strength, each held-out (prompt, seed) is sampled guided
and unguided from the same noise. Reported per row and objective: the ground-truth means of the guided
clips; wins, losses and ties against the unguided clip of the same prompt and seed (pairs whose scores
differ by less than the labelling margin ``pairs.TIE_MARGIN`` are ties); the win rate over decisive
pairs with its 95% Wilson interval and a two-sided sign-test p-value (``stats``); and seconds per clip
against unguided. Every configuration is one batch of all its clips, so the times compare.

Settings are chosen on one seed range and reported on another: ``tune`` runs the single-objective
rows on ``TUNE_SEED_BASE + j`` and picks the strength whose rows most raise their own objective; the
report uses ``world.EVAL_SEED_BASE + j``, which no choice ever looked at.
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

from demo_world import world
from demo_world.metrics import METRICS_VERSION, OBJECTIVES, evaluate, object_mask
from demo_world.pairs import TIE_MARGIN
from guidance.win_rates import WinRate, win_rate

#: The rows of the paper's Table 5 (VQ:MQ:TA), plus the two single-objective rows it lacks and 1:1:1.
DEFAULT_SETTINGS = ("0:0:1", "0.1:0.1:0.8", "0.5:0.5:0", "1:0:0", "0:1:0", "1:1:1")
#: The rows tuning looks at, each with the objective it should raise.
SINGLE_OBJECTIVE = {"1:0:0": "vq", "0:1:0": "mq", "0:0:1": "ta"}
#: 8 held-out prompts x 12 seeds = 96 clips per row.
DEFAULT_SEEDS = 12
#: Tuning seeds: far from the report's (``world.EVAL_SEED_BASE + j``) and from training's (below it).
TUNE_SEED_BASE = world.EVAL_SEED_BASE + 500_000
#: (prompt, seed) pairs shown on the contact sheet.
SHEET_ITEMS = 6


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


def means(scores: list[dict]) -> dict[str, float]:
    """The mean of each objective over clips' ground-truth scores."""
    return {o: float(np.mean([s[o] for s in scores])) for o in OBJECTIVES}


def score_clips(frames, texts: Sequence[str]) -> list[dict[str, float]]:
    """The ground truth (``metrics.evaluate``: VQ, MQ, TA) of every clip of ``frames`` [B, F, H, W, 3]
    in [0, 1] (numpy or torch), each against its own prompt of ``texts``."""
    if len(frames) != len(texts):
        raise ValueError(f"{len(frames)} clips but {len(texts)} prompts")
    return [evaluate(clip, text) for clip, text in zip(frames, texts)]


def visible_change(guided: np.ndarray, unguided: np.ndarray,
                   unguided_masks: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """How far guidance moved the pixels a person looks at: per clip pair, the mean absolute difference
    (in 1/255) over the object's pixels in either clip and over the whole frame; medians over pairs.
    A steered object can change by tens of levels while the frame's mean moves by two or three, which
    a viewer reads as "nearly identical" unless shown where to look. ``unguided_masks`` (the unguided
    clips' ``object_mask``) spare segmenting the same unguided clips again for every guided row."""
    if unguided_masks is None:
        unguided_masks = [object_mask(u) for u in unguided]
    on_object, on_frame = [], []
    for g, u, u_mask in zip(guided, unguided, unguided_masks):
        diff = np.abs(g.astype(np.float64) - u).mean(-1) * 255.0
        mask = object_mask(g) | u_mask
        on_frame.append(float(diff.mean()))
        if mask.any():
            on_object.append(float(diff[mask].mean()))
    return {"object": float(np.median(on_object)) if on_object else 0.0, "frame": float(np.median(on_frame))}


def paired_win_rates(guided: Sequence[dict], unguided: Sequence[dict],
                     margins: dict[str, float] = TIE_MARGIN) -> dict[str, WinRate]:
    """Per objective of ``margins``: the wins, losses and ties of each guided clip's score over the
    unguided clip of the same prompt and seed (the same position in both lists); a pair is decisive
    when the scores differ by at least the objective's margin (``pairs.TIE_MARGIN`` by default)."""
    if len(guided) != len(unguided):
        raise ValueError(f"paired win rates need as many guided as unguided clips; got {len(guided)} and {len(unguided)}")
    return {o: win_rate([g[o] - u[o] for g, u in zip(guided, unguided)], margin) for o, margin in margins.items()}


def run_eval(
    model: str | Path | None = None,
    reward: str | Path | None = None,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    strengths: Sequence[float] | None = None,
    prompts: int | None = None,
    seeds: int = DEFAULT_SEEDS,
    seed_base: int = world.EVAL_SEED_BASE,
    steps: int | None = None,
    window: tuple[float, float] | None = None,
    mode: str | None = None,
    device: str | None = None,
    progress: bool = True,
    command: str | None = None,
    figures: str | Path | None = None,
    oracle: bool = False,
) -> dict:
    """Evaluate every (setting, strength); unset strengths, window and mode come from the reward
    model's recommended defaults, as for a request that gives only weights. With ``figures`` (a
    directory) the contact sheet and the trade-off plot are written there too. With ``oracle`` the
    guidance reward is the differentiable oracle of the ground truth (``oracle.OracleReward``)
    instead of the reward model: the ceiling of what gradient guidance can do on this world."""
    import torch
    from tqdm.auto import tqdm

    from demo_world.figures import contact_sheet, tradeoff_plot
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.nrg import defaults_for
    from guidance.reward_model import RewardCalibration, load_reward_model
    from guidance.sampler import SampleSpec, sample

    for setting in settings:
        parse_setting(setting)
    if strengths is not None and (not strengths or any(not (w >= 0 and w < float("inf")) for w in strengths)):
        raise ValueError(f"strengths must be finite numbers >= 0; got {list(strengths)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = steps or DEFAULT_STEPS
    family = load_pipeline(model or DEFAULT_MODEL_DIR, device=device)
    reward_model = load_reward_model(reward or DEFAULT_REWARD_DIR, family)
    missing = [o for o in OBJECTIVES if o not in reward_model.objectives]
    if missing:
        raise ValueError(f"the reward model lacks objective(s) {missing}; it has {list(reward_model.objectives)}. "
                         "The demo world judges vq, mq and ta only; for your own objectives give --prompts FILE "
                         "(and --judge NAME=SPEC with --tune; docs/your-model.md)")
    guide = reward_model
    if oracle:
        from demo_world.oracle import OracleReward

        guide = OracleReward(family)
    defaults = defaults_for(reward_model)
    mode = mode or defaults.mode
    window = tuple(window or defaults.window)
    strengths = [float(w) for w in strengths] if strengths is not None else [defaults.complete({}, mode=mode).strength]
    chosen = world.eval_prompts()
    if prompts is not None:
        if not 1 <= prompts <= len(chosen):
            raise ValueError(f"--prompts must be between 1 and {len(chosen)}; got {prompts}")
        chosen = chosen[:prompts]
    items = [(p.text, seed_base + j) for j in range(seeds) for p in chosen]
    configs = [(None, 0.0)] + [(s, w) for s in settings for w in strengths]

    def spec_of(setting: str, strength: float):
        return defaults.complete(parse_setting(setting), strength, window, mode)

    # Warm-up (first-call allocations, lazy inits) so that no row's time includes it.
    warm = spec_of(configs[-1][0], configs[-1][1]) if len(configs) > 1 else None
    sample(family, [SampleSpec(items[0][0], seed=items[0][1], guidance=warm)], DEFAULT_SHAPE, 2, guide)

    load_before = os.getloadavg()[0]
    results: dict[tuple, dict] = {}
    sheet: dict[tuple, list[np.ndarray]] = {}
    for setting, strength in tqdm(configs, desc="eval", unit="config", disable=not progress):
        guidance = None if setting is None else spec_of(setting, strength)
        specs = [SampleSpec(text, seed=seed, guidance=guidance) for text, seed in items]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = sample(family, specs, DEFAULT_SHAPE, steps, guide)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        frames = out.frames.float().cpu().numpy()
        scores = score_clips(frames, [text for text, _ in items])
        results[(setting, strength)] = {"scores": scores, "seconds_per_clip": seconds / len(items),
                                        "skipped_steps": int(sum(out.skipped_steps)), "rewards": out.rewards}
        if setting is None:
            unguided_frames, unguided_masks = frames, [object_mask(clip) for clip in frames]
        else:
            results[(setting, strength)]["visible_change"] = visible_change(frames, unguided_frames, unguided_masks)
        sheet[(setting, strength)] = list(frames[:SHEET_ITEMS])

    base = results[(None, 0.0)]
    calibration = None if len(items) < 2 or oracle else RewardCalibration.from_scores(
        reward_model.objectives, base["rewards"],
        f"nrg eval: final-latent scores of {len(items)} unguided clips, seeds {items[0][1]}..{items[-1][1]}")
    rows = []
    for setting, strength in configs[1:]:
        res = results[(setting, strength)]
        stats = paired_win_rates(res["scores"], base["scores"])
        rows.append({
            "weights": setting, "strength": strength, "mode": mode, **means(res["scores"]),
            "win_rate": {o: stats[o].rate for o in OBJECTIVES},
            "wins": {o: stats[o].wins for o in OBJECTIVES}, "losses": {o: stats[o].losses for o in OBJECTIVES},
            "ties": {o: stats[o].ties for o in OBJECTIVES},
            "stats": {o: stats[o].to_json() for o in OBJECTIVES},
            "seconds_per_clip": res["seconds_per_clip"],
            "cost_vs_unguided": res["seconds_per_clip"] / base["seconds_per_clip"],
            "skipped_steps": res["skipped_steps"],
            "visible_change": res["visible_change"],
        })
    report = {
        "command": command,
        "device": device_text(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": str(model or DEFAULT_MODEL_DIR),
        "reward": "oracle (demo_world.oracle)" if oracle else str(reward or DEFAULT_REWARD_DIR),
        "reward_defaults": defaults.to_json(),
        "objectives": list(OBJECTIVES),
        "steps": steps, "cfg": family.default_cfg, "window": list(window), "mode": mode,
        "prompts": [p.text for p in chosen], "seeds": [seed_base + j for j in range(seeds)],
        "settings": list(settings), "strengths": strengths,
        "clips_per_row": len(items), "tie_margin": TIE_MARGIN, "metrics_version": METRICS_VERSION,
        "load_average": [load_before, os.getloadavg()[0]],
        "unguided": {**means(base["scores"]), "seconds_per_clip": base["seconds_per_clip"]},
        "calibration": None if calibration is None else calibration.to_json(),
        "rows": rows,
        "per_clip": {"unguided": base["scores"],
                     **{f"{s}@{w:g}": results[(s, w)]["scores"] for s, w in configs[1:]}},
    }
    if figures is not None and rows:
        figures = Path(figures)
        labels = ["unguided"] + [f"{s} @ {w:g}" for s, w in configs[1:]]
        shown = range(min(SHEET_ITEMS, len(items)))
        report["figures"] = {
            "contact_sheet": str(contact_sheet(
                labels, [f"{items[i][0]} (seed {items[i][1]})" for i in shown],
                [[sheet[c][i] for c in configs] for i in shown], figures / "eval_contact_sheet.png")),
            "tradeoff": str(tradeoff_plot(report, figures / "eval_tradeoff.png")),
        }
    return report


def calibrate(seeds: int = 4, **kwargs) -> dict:
    """The unguided row alone on tuning seeds: the reward model's score statistics on the model's own
    samples (``report["calibration"]``), with no guided configuration."""
    return run_eval(settings=(), strengths=[0.0], seeds=seeds, seed_base=TUNE_SEED_BASE, **kwargs)


def tuning_scores(report: dict) -> dict[float, float]:
    """Per strength, the mean over the single-objective rows of (wins - losses) / clips on the
    objective the row weights: the net share of clips guidance improves. A win *rate* would favour
    near-no-op strengths (1 win of 1 decisive pair is 100%); the net share weighs effect and evidence."""
    scores: dict[float, list[float]] = {}
    for row in report["rows"]:
        stats = row["stats"][SINGLE_OBJECTIVE[row["weights"]]]
        scores.setdefault(row["strength"], []).append((stats["wins"] - stats["losses"]) / report["clips_per_row"])
    return {w: float(np.mean(v)) for w, v in scores.items()}


def tune(
    strengths: Sequence[float],
    seeds: int = 4,
    **kwargs,
) -> tuple[dict, float]:
    """Pick the strength that best raises each single-objective row's own objective, on tuning seeds
    (``tuning_scores``; ties go to the smaller strength). Returns the tuning report, with its scores,
    and the chosen strength."""
    report = run_eval(settings=tuple(SINGLE_OBJECTIVE), strengths=strengths, seeds=seeds,
                      seed_base=TUNE_SEED_BASE, **kwargs)
    scores = tuning_scores(report)
    report["tuning_scores"] = {f"{w:g}": v for w, v in scores.items()}
    best = max(scores, key=lambda w: (scores[w], -w))
    return report, best


def win_cell(stats: dict) -> str:
    """``62.5 [48-75] 40/64 p=0.06``: win rate %, 95% interval, wins / decisive pairs, sign test."""
    if stats["rate"] is None:
        return f"- (0 decisive, {stats['ties']} ties)"
    lo, hi = stats["ci95"]
    return (f"**{100 * stats['rate']:.1f}** [{100 * lo:.0f}-{100 * hi:.0f}] {stats['wins']}/{stats['decisive']} "
            f"p={stats['p_value']:.2g}")


def format_table(report: dict) -> str:
    """One row per weight setting and strength: win rates against unguided with their evidence, means, cost."""
    u = report["unguided"]
    lines = [
        ("| VQ:MQ:TA | mode | strength | win VQ | win MQ | win TA | mean VQ / MQ / TA | changed /255, object / frame "
         "| s/clip (x unguided) |"),
        "|---|---|---|---|---|---|---|---|---|",
        f"| unguided | - | 0 | - | - | - | {u['vq']:.3f} / {u['mq']:.3f} / {u['ta']:.3f} | - | "
        f"{u['seconds_per_clip']:.3f} |",
    ]
    for r in report["rows"]:
        cells = " | ".join(win_cell(r["stats"][o]) for o in OBJECTIVES)
        lines.append(
            f"| {r['weights']} | {r['mode']} | {r['strength']:g} | {cells} | {r['vq']:.3f} / {r['mq']:.3f} / "
            f"{r['ta']:.3f} | {r['visible_change']['object']:.1f} / {r['visible_change']['frame']:.1f} | "
            f"{r['seconds_per_clip']:.3f} ({r['cost_vs_unguided']:.2f}x) |"
        )
    lines.append("")
    lines.append("Win cells: win rate % [95% Wilson interval] wins/decisive pairs, two-sided sign-test p. Changed: "
                 "median over clips of the mean absolute pixel change against the unguided clip, on the object's "
                 "pixels and over the whole frame.")
    if "tuning_scores" in report:
        lines.append("Tuning score per strength (mean over the single-objective rows of (wins - losses) / clips "
                     "on the row's own objective): "
                     + ", ".join(f"{w}: {100 * v:+.1f}%" for w, v in report["tuning_scores"].items()))
    return "\n".join(lines)


def benchmark_section(report: dict) -> str:
    kind = "tuning run (tuning seeds; not a result)" if "tuning_scores" in report else "report"
    figures = report.get("figures")
    return "\n".join([
        f"## Flow-NRG on the demo world (`nrg eval`, {kind}), {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}; 1-min load average before / after: "
        f"{report['load_average'][0]:.2f} / {report['load_average'][1]:.2f} (the cores are shared with other jobs)",
        f"- date: {report['date']}",
        f"- settings (VQ:MQ:TA): {', '.join(report['settings'])}; strengths: "
        f"{', '.join(f'{w:g}' for w in report['strengths'])}; reward defaults: {report['reward_defaults']}",
        f"- {report['clips_per_row']} clips per row ({len(report['prompts'])} held-out prompts x "
        f"{len(report['seeds'])} seeds {report['seeds'][0]}..{report['seeds'][-1]}), {report['steps']} steps, "
        f"CFG {report['cfg']:g}, window {report['window']}, mode {report['mode']}; decisive pair = the guided and "
        f"unguided clip of one prompt and seed differ by at least the tie margin {report['tie_margin']}; means are "
        f"ground-truth scores (demo_world.metrics, version {report.get('metrics_version', 1)})",
        *([f"- pictures: `{figures['contact_sheet']}`, `{figures['tradeoff']}`"] if figures else []),
        "",
        format_table(report),
        "",
    ])


BENCHMARKS_HEADER = """# Benchmarks

Every figure in this file comes with the exact command that produced it, the device it ran on and
the date. Append new measurements; do not rewrite other sections.
"""


def append_benchmarks(path: str | Path, report: dict) -> Path:
    return append_section(path, benchmark_section(report))


def append_section(path: str | Path, section: str) -> Path:
    """Append a dated section to docs/benchmarks.md (``path``), after a blank line; a missing file
    starts with the page's header."""
    path = Path(path)
    text = path.read_text() if path.is_file() else BENCHMARKS_HEADER
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n" + section)
    return path


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "nrg " + " ".join(shlex.quote(a) for a in args)


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path
