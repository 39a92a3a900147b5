"""``python -m benchmarks.steering_per_compute``: what each way of steering buys per unit of compute, on the demo world.

One table in the form of LatSearch's (Wan2.1-1.3B on VBench-2.0: best-of-4 with VideoReward +0.90 at 3.67x the
time, LatSearch +3.35 at 2.13x): per method, its time as a multiple of unguided sampling and its ground-truth win
rates against the unguided clip of the same prompt and seed. Methods (rows, ``--methods``):

* ``unguided``: the baseline (1.00x); always run, every other row is paired with it;
* ``nrg-embedded``: Flow-NRG with the embedded demo reward at its recommended mode, strength and window
  (chosen by ``nrg eval --tune`` on tuning seeds), weights ``--objectives`` VQ:MQ:TA;
* ``nrg-distilled``: Flow-NRG with a latent reward made by ``nrg reward distill`` (``--distilled DIR``), every
  objective weighted 1 at the strength the distillation tuned with its judge (on its tuning seeds);
* ``best-of-n`` and ``fk``: the search modes with the judge ``--judge`` (``guidance.judges.as_reward.JudgeReward``:
  the judge scores each particle's decoded clean estimate), ``--particles`` particles, every objective of
  ``--judge-objectives`` weighted 1, the modes' built-in strength and window;
* ``judge-gradient``: relative-mode gradient guidance by the judge's differentiable objectives of
  ``--judge-objectives`` through the decoder, at ``--judge-strength`` (untuned) or, with ``--tune``, the strength
  among ``--tune-strengths`` whose clips the judge itself scores best on tuning seeds. A judge with no
  differentiable objective among them, or a refused setting, makes the row read "unavailable: <the reason>"; the
  others still run.

Timing is interleaved: the report's clips are cut into batches (every prompt at one seed), and each batch runs
every method (in an order rotated from batch to batch) before the next batch starts, so all rows meet the same
machine load. A row's time multiple is the median over batches of its batch time / the unguided batch time of the
same pass. The ground truth (``demo_world.metrics`` via ``demo_world.evaluate``: VQ, MQ, TA and their sum) judges
every row; it is never what a row optimised. The ``classic`` judge's scores are a second, non-ground-truth
column group, so a reader sees where the judge and the truth disagree. Each finished (batch, method) is written
to ``--output-file`` at once; ``--resume`` continues a killed run from there. docs/bench.md explains the columns.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from demo_world import evaluate as gt
from demo_world import world
from demo_world.metrics import METRICS_VERSION, OBJECTIVES
from demo_world.pairs import TIE_MARGIN
from guidance.nrg import DEFAULT_STRENGTH

METHODS = ("unguided", "nrg-embedded", "nrg-distilled", "best-of-n", "fk", "judge-gradient")
#: The classic objectives the default judge ranks by, and the classic column group: the objectives of the reward
#: distilled in docs/benchmarks.md ("A latent reward distilled from a judge"), so the rows steer by the same judge.
DEFAULT_JUDGE_OBJECTIVES = ("sharpness", "low_noise", "motion_smoothness")
#: ``judge-gradient``'s strength without ``--tune``: the built-in relative strength (3 CFG terms), untuned.
DEFAULT_JUDGE_STRENGTH = DEFAULT_STRENGTH
DEFAULT_TUNE_STRENGTHS = (1.0, 3.0, 8.0)
#: The ground truth's columns: the three metrics and their sum. A pair is decisive on the sum when it moves
#: by at least the smallest single-objective margin (one objective's smallest meaningful change).
SUM = "sum"
TRUTH_MARGINS = {**TIE_MARGIN, SUM: min(TIE_MARGIN.values())}
#: A classic objective's pair is a tie below this share of its spread (standard deviation) over the unguided
#: clips of the run, as ``nrg reward distill`` judges its held-out judges; never below ``MIN_MARGIN``.
CLASSIC_TIE_SHARE = 0.1
MIN_MARGIN = 1e-6
#: Steps of the untimed warm-up clip of each method (enough for the demo's window to be reached).
WARMUP_STEPS = 4
SCRIPT = "python -m benchmarks.steering_per_compute"


@dataclass
class Method:
    """One row: the reward it samples with (None: unguided), its guidance, what the table says of its
    setting, and why it cannot run (None when it can)."""

    name: str
    reward: Any = None
    guidance: Any = None
    setting: dict[str, Any] | None = None
    reason: str | None = None


# -- settings ------------------------------------------------------------------------------------------------------

def _spec_json(spec) -> dict[str, Any]:
    out = {"weights": dict(spec.weights), "mode": spec.mode, "strength": spec.strength, "window": list(spec.window)}
    if spec.search:
        out["particles"] = spec.particles
    return out


def distilled_dir(path: Path) -> Path:
    """``nrg reward distill``'s output directory or its ``reward/`` inside."""
    return path / "reward" if (path / "reward" / "reward_config.json").is_file() else path


def distilled_from(path: Path) -> str | None:
    """The judge a distilled reward was made from, as its distillation recorded it."""
    report = path.parent / "report.json"
    if report.is_file():
        return json.loads(report.read_text()).get("judge")
    source = json.loads((path / "reward_config.json").read_text()).get("guidance_defaults", {}).get("source", "")
    return source.partition("tuned by ")[2] or None


def distilled_method(directory: Path | None, family) -> Method:
    """The ``nrg-distilled`` row: every objective of the distilled reward weighted 1, at its recommended
    (tuned) mode, strength and window (``nrg reward distill`` stores them in its ``reward_config.json``)."""
    from guidance.nrg import defaults_for
    from guidance.reward_model import load_reward_model

    if directory is None:
        return Method("nrg-distilled", reason="no --distilled DIR given")
    path = distilled_dir(directory)
    try:
        reward = load_reward_model(path, family)
    except (OSError, ValueError) as exc:
        return Method("nrg-distilled", reason=f"cannot load {path}: {exc}")
    made_from = distilled_from(path)
    if made_from is not None and "demo_world" in made_from:
        return Method("nrg-distilled", reason=f"{path} was distilled from {made_from}, the ground truth that judges "
                                              "every row")
    defaults = defaults_for(reward)
    spec = defaults.complete(dict.fromkeys(reward.objectives, 1.0))
    return Method("nrg-distilled", reward, spec, {
        "reward": str(path), **_spec_json(spec), "strength_source": defaults.source,
        "tuned": defaults.source.startswith("nrg reward distill: tuned by"), "distilled_from": made_from})


def judge_gradient_strength(args, tune: dict[str, Any] | None) -> tuple[float, str]:
    """judge-gradient's strength and where it comes from: the tuned one (a cached tuning counts), else
    ``--judge-strength``."""
    if tune is not None and tune.get("strength") is not None:
        tried = ", ".join(f"{r['strength']:g}" for r in tune["rows"])
        return float(tune["strength"]), (f"--tune: the judge's best mean gain on tuning seeds "
                                         f"{tune['seeds'][0]}..{tune['seeds'][-1]} among {tried}")
    if tune is not None:
        return args.judge_strength, "--judge-strength (untuned: no strength --tune tried raised the judge)"
    return args.judge_strength, "--judge-strength (untuned)"


def build_methods(args, family, judge, judge_name: str, tune: dict[str, Any] | None) -> dict[str, Method]:
    from guidance.demo import DEFAULT_REWARD_DIR
    from guidance.judges.as_reward import JudgeReward
    from guidance.nrg import BUILTIN_DEFAULTS, defaults_for
    from guidance.reward_model import load_reward_model

    methods: dict[str, Method] = {"unguided": Method("unguided", setting={"what": "the pipeline alone"})}
    wanted = set(args.methods)
    if "nrg-embedded" in wanted:
        reward_dir = args.reward or DEFAULT_REWARD_DIR
        reward = load_reward_model(reward_dir, family)
        missing = [o for o in OBJECTIVES if o not in reward.objectives]
        if missing:
            methods["nrg-embedded"] = Method("nrg-embedded", reason=f"the reward {reward_dir} lacks {missing}")
        else:
            defaults = defaults_for(reward)
            spec = defaults.complete(gt.parse_setting(args.objectives))
            methods["nrg-embedded"] = Method("nrg-embedded", reward, spec, {
                "reward": str(reward_dir), **_spec_json(spec), "strength_source": defaults.source})
    if "nrg-distilled" in wanted:
        methods["nrg-distilled"] = distilled_method(args.distilled, family)
    weights = dict.fromkeys(args.judge_objectives, 1.0)
    strength, strength_source = judge_gradient_strength(args, tune)
    for name, mode in (("best-of-n", "best_of_n"), ("fk", "fk")):
        if name in wanted:
            spec = BUILTIN_DEFAULTS.complete(weights, mode=mode, particles=args.particles)
            methods[name] = Method(name, JudgeReward(family, judge, args.fps), spec,
                                   {"judge": judge_name, **_spec_json(spec), "strength_source": "built-in"})
    if "judge-gradient" in wanted:
        usable = [o for o in args.judge_objectives if o in judge.differentiable]
        dropped = [o for o in args.judge_objectives if o not in judge.differentiable]
        if not usable:
            methods["judge-gradient"] = Method("judge-gradient", reason=f"none of {list(args.judge_objectives)} is "
                                               f"differentiable in the judge {judge_name}")
        else:
            spec = BUILTIN_DEFAULTS.complete(dict.fromkeys(usable, 1.0), strength=strength, mode="relative")
            setting = {"judge": judge_name, **_spec_json(spec), "not_differentiable": dropped,
                       "strength_source": strength_source}
            try:
                methods["judge-gradient"] = Method("judge-gradient", JudgeReward(family, judge, args.fps), spec,
                                                   setting)
            except ValueError as exc:
                methods["judge-gradient"] = Method("judge-gradient", setting=setting, reason=str(exc))
    for name in args.methods:
        if name in methods and methods[name].reason is None and methods[name].guidance is not None:
            methods[name].guidance.validate(methods[name].reward.objectives)
    return methods


# -- sampling ------------------------------------------------------------------------------------------------------

def run_clips(family, method: Method, items: Sequence[tuple[str, int]], steps: int, device: str):
    """Sample ``items`` (prompt, seed) with the method; (wall seconds, CPU seconds of this process, result). Only
    the sampling is timed (decoding included, as a served request; scoring not)."""
    import torch

    from guidance.demo import DEFAULT_SHAPE
    from guidance.sampler import SampleSpec, sample

    specs = [SampleSpec(text, seed=seed, guidance=method.guidance) for text, seed in items]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    result = sample(family, specs, DEFAULT_SHAPE, steps, method.reward)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, result


def clip_records(result, items: Sequence[tuple[str, int]], classic, fps: float) -> list[dict[str, Any]]:
    """Per clip: prompt, seed, ground truth (VQ, MQ, TA, sum), the classic judge's scores, denoiser passes."""
    import torch

    frames = result.frames.float().cpu()
    texts = [items[int(i)][0] for i in result.ids]
    truth = gt.score_clips(frames.numpy(), texts)
    with torch.no_grad():
        judged = classic.score(frames, texts, fps).tolist()
    records = []
    for n, i in enumerate(result.ids):
        text, seed = items[int(i)]
        records.append({"prompt": text, "seed": seed, "truth": {**truth[n], SUM: sum(truth[n][o] for o in OBJECTIVES)},
                        "classic": dict(zip(classic.objectives, judged[n])),
                        "passes": result.denoiser_passes[n] if result.denoiser_passes else None})
    return records


def tune_judge_gradient(family, method: Method, judge, prompts: Sequence[str], seeds: int, steps: int,
                        strengths: Sequence[float], device: str, fps: float, log: Callable[[str], None]) -> dict:
    """The strength whose clips the judge scores best on tuning seeds (``evaluate.TUNE_SEED_BASE + j``, never
    the report's): per strength, the judge's mean change over the weighted objectives, each in units of its
    spread over the unguided tuning clips; the best positive one, else none (the row keeps --judge-strength)."""
    import torch

    items = [(p, gt.TUNE_SEED_BASE + j) for j in range(seeds) for p in prompts]
    texts = [t for t, _ in items]
    columns = [judge.objectives.index(o) for o in method.guidance.weights]

    def judged(m: Method) -> torch.Tensor:
        _, _, result = run_clips(family, m, items, steps, device)
        with torch.no_grad():
            return judge.score(result.frames.float(), texts, fps)[:, columns].float().cpu()

    base = judged(Method("unguided"))
    spread = base.std(0).nan_to_num(0.0).clamp(min=1e-8) if len(items) > 1 else torch.ones(len(columns))
    rows = []
    for strength in strengths:
        guided = judged(replace(method, guidance=replace(method.guidance, strength=float(strength))))
        gain = ((guided - base) / spread).mean(0)
        rows.append({"strength": float(strength), "judge_gain": dict(zip(method.guidance.weights, gain.tolist())),
                     "mean_gain": float(gain.mean())})
        log(f"tune judge-gradient: strength {strength:g}: mean judge gain {float(gain.mean()):+.3f} spreads")
    best = max(rows, key=lambda r: (r["mean_gain"], -r["strength"]))
    return {"seeds": sorted({s for _, s in items}), "prompts": list(prompts), "rows": rows,
            "strength": best["strength"] if best["mean_gain"] > 0 else None}


# -- the cache and the statistics ---------------------------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _save(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


def check_resumable(cached: dict[str, Any], config: dict[str, Any], methods: dict[str, Method]) -> None:
    """A cache continues only the same run: the same configuration, and each cached row's same setting."""
    differ = [k for k in config if cached.get("config", {}).get(k) != config[k]]
    if differ:
        raise ValueError(f"--resume: the cached run differs in {differ} (cached "
                         f"{ {k: cached.get('config', {}).get(k) for k in differ} }); use another --output-file")
    for name, method in methods.items():
        before = cached.get("methods", {}).get(name, {}).get("setting")
        has_records = any(name in batch for batch in cached.get("batches", {}).values())
        if has_records and method.setting is not None and before is not None and before != method.setting:
            raise ValueError(f"--resume: the cached {name} rows were run with {before}, this run would use "
                             f"{method.setting}; use another --output-file")


def _time_stats(ratios: list[float]) -> dict[str, Any]:
    if not ratios:
        return {"median": None, "min": None, "max": None, "batches": 0}
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "batches": len(ratios)}


def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows from the cached clips: each method's clips paired with the unguided clip of the same
    prompt and seed; win rates of the ground truth (``evaluate.paired_win_rates``, margins ``TRUTH_MARGINS``) and
    of the classic judge (margins ``CLASSIC_TIE_SHARE`` x the unguided spread); the time multiple per batch."""
    batches = report["batches"]
    base = {(c["prompt"], c["seed"]): c for b in batches.values() if "unguided" in b for c in b["unguided"]["clips"]}
    classic_objectives = report["config"]["classic_objectives"]
    unguided_classic = [c["classic"] for c in base.values()]
    margins = {o: max(CLASSIC_TIE_SHARE * statistics.stdev(s[o] for s in unguided_classic), MIN_MARGIN)
               if len(unguided_classic) > 1 else MIN_MARGIN for o in classic_objectives}
    report["classic_margins"] = margins
    rows = []
    for name, info in sorted(report["methods"].items(), key=lambda kv: METHODS.index(kv[0])):
        clips, ratios, cpu_ratios, seconds, unguided_seconds = [], [], [], 0.0, 0.0
        for key in sorted(batches, key=int):
            record = batches[key].get(name)
            if record is None or "unguided" not in batches[key]:
                continue
            clips += record["clips"]
            ratios.append(record["seconds"] / record["unguided_seconds"])
            if record.get("unguided_cpu_seconds"):
                cpu_ratios.append(record["cpu_seconds"] / record["unguided_cpu_seconds"])
            seconds += record["seconds"]
            unguided_seconds += record["unguided_seconds"]
        row: dict[str, Any] = {"method": name, "setting": info.get("setting"), "reason": info.get("reason"),
                               "clips": len(clips), "time_vs_unguided": _time_stats(ratios),
                               "cpu_time_vs_unguided": _time_stats(cpu_ratios)}
        if clips:
            paired = [base[(c["prompt"], c["seed"])] for c in clips]
            truth = gt.paired_win_rates([c["truth"] for c in clips], [u["truth"] for u in paired], TRUTH_MARGINS)
            judged = gt.paired_win_rates([c["classic"] for c in clips], [u["classic"] for u in paired], margins)
            passes = [c["passes"] for c in clips if c["passes"] is not None]
            row.update({
                "seconds_per_clip": seconds / len(clips), "unguided_seconds_per_clip": unguided_seconds / len(clips),
                "passes_per_clip": statistics.mean(passes) if passes else None,
                "truth_means": {o: statistics.mean(c["truth"][o] for c in clips) for o in TRUTH_MARGINS},
                "classic_means": {o: statistics.mean(c["classic"][o] for c in clips) for o in classic_objectives},
                "truth": {o: s.to_json() for o, s in truth.items()},
                "classic": {o: s.to_json() for o, s in judged.items()},
            })
        rows.append(row)
    return rows


# -- the table -----------------------------------------------------------------------------------------------------

def _setting_cell(row: dict[str, Any]) -> str:
    s = row["setting"] or {}
    if row["method"] == "unguided":
        return "-"
    weights = ",".join(f"{k}={v:g}" for k, v in s.get("weights", {}).items())
    text = f"{s.get('mode')} {weights}"
    if s.get("mode") != "best_of_n":  # best-of-N has no strength
        text += f" strength {s.get('strength', 0):g}"
    if "particles" in s:
        text += f", N={s['particles']}"
    if row["method"] == "judge-gradient":
        text += " (tuned on tuning seeds)" if s.get("strength_source", "").startswith("--tune:") else " (untuned)"
    elif row["method"] == "nrg-distilled" and not s.get("tuned", False):
        text += " (untuned: the reward carries no tuned strength)"
    return text


def _time_cell(t: dict[str, Any]) -> str:
    if t["median"] is None:
        return "-"
    return f"**{t['median']:.2f}x** [{t['min']:.2f}-{t['max']:.2f}]"


def format_table(report: dict[str, Any]) -> str:
    classic_objectives = report["config"]["classic_objectives"]
    head = (["method", "setting", "clips", "time (x unguided)", "passes/clip"]
            + [f"truth: {o.upper() if o != SUM else 'VQ+MQ+TA'}" for o in TRUTH_MARGINS]
            + ["truth means VQ / MQ / TA"] + [f"classic: {o}" for o in classic_objectives])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        if row["reason"] is not None:
            lines.append(f"| {row['method']} | unavailable: {row['reason']} |" + " - |" * (len(head) - 2))
            continue
        if not row["clips"]:
            lines.append(f"| {row['method']} | {_setting_cell(row)} | 0 |" + " - |" * (len(head) - 3))
            continue
        means = row["truth_means"]
        baseline = row["method"] == "unguided"
        cells = ["-" if baseline else gt.win_cell(row["truth"][o]) for o in TRUTH_MARGINS]
        judged = ["-" if baseline else gt.win_cell(row["classic"][o]) for o in classic_objectives]
        passes = "-" if row["passes_per_clip"] is None else f"{row['passes_per_clip']:.1f}"
        lines.append(f"| {row['method']} | {_setting_cell(row)} | {row['clips']} | "
                     f"{'1.00x' if baseline else _time_cell(row['time_vs_unguided'])} | {passes} | "
                     + " | ".join(cells) + f" | {means['vq']:.3f} / {means['mq']:.3f} / {means['ta']:.3f} | "
                     + " | ".join(judged) + " |")
    lines += ["", "Time: median over batches of the row's batch time / the unguided batch time of the same pass "
              "[min-max over batches]; passes/clip: the sampler's denoiser passes per clip (a judge's clean-estimate "
              "passes, decodes and scoring not counted). Win cells: win rate % against the unguided clip of the same "
              "prompt and seed [95% Wilson interval] wins/decisive pairs, two-sided sign-test p. Ground truth "
              f"(demo_world.metrics v{report['metrics_version']}): decisive at |difference| >= {TRUTH_MARGINS}. "
              f"classic (not ground truth): decisive at >= {CLASSIC_TIE_SHARE} x the unguided clips' spread "
              f"({', '.join(f'{o} {m:.3g}' for o, m in report.get('classic_margins', {}).items())})."]
    return "\n".join(lines)


def setting_line(name: str, info: dict[str, Any]) -> str:
    """A row's setting in full, for the section's list."""
    if info.get("reason"):
        return f"  - {name}: unavailable: {info['reason']}"
    s = info["setting"] or {}
    if name == "unguided":
        return f"  - {name}: {s.get('what', '')}"
    parts = [f"mode {s['mode']}", "weights " + ", ".join(f"{k} {v:g}" for k, v in s["weights"].items()),
             f"strength {s['strength']:g}", f"window {s['window']}"]
    if "particles" in s:
        parts.append(f"{s['particles']} particles")
    if "reward" in s:
        parts.append(f"reward `{s['reward']}`")
    if s.get("distilled_from"):
        parts.append(f"distilled from the judge {s['distilled_from']}")
    if "judge" in s:
        parts.append(f"judge {s['judge']}")
    if s.get("not_differentiable"):
        parts.append(f"left out (not differentiable): {', '.join(s['not_differentiable'])}")
    return f"  - {name}: {'; '.join(parts)}; strength from: {s.get('strength_source', '-')}"


def benchmark_section(report: dict[str, Any]) -> str:
    c = report["config"]
    seeds = report["seeds"]
    settings = [setting_line(name, report["methods"][name]) for name in METHODS if name in report["methods"]]
    counts = ", ".join(f"{r['method']} {r['clips']}" for r in report["rows"] if r["reason"] is None)
    cpu = ", ".join(f"{r['method']} {r['cpu_time_vs_unguided']['median']:.2f}x" for r in report["rows"]
                    if r["method"] != "unguided" and r["cpu_time_vs_unguided"]["median"] is not None)
    tune = report.get("tune")
    tune_line = []
    if tune:
        tune_line = [f"- judge-gradient tuning (seeds {tune['seeds'][0]}..{tune['seeds'][-1]}, not report seeds): "
                     + ", ".join(f"{r['strength']:g}: {r['mean_gain']:+.3f}" for r in tune["rows"])
                     + f" judge spreads; chosen {tune['strength'] if tune['strength'] is not None else 'none'}"]
    return "\n".join([
        f"## Steering per compute on the demo world (`benchmarks.steering_per_compute`), {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}; torch {report['torch']}; 1-min load average before / after: "
        f"{report['load_start'][0]:.2f} / {report['load_end'][0]:.2f} ({report['cores']} cores)",
        f"- clips per row: {counts} "
        f"({len(c['prompts'])} held-out prompts x report seeds {seeds[0]}..{seeds[-1]}), in batches of one seed's "
        f"prompts, each batch running every row interleaved; {c['steps']} steps, CFG {report['cfg']:g}; judge "
        f"`{report['judge']['name']}={report['judge']['spec']}`",
        *([f"- CPU-time multiples (this process's CPU seconds per batch over unguided's, median; less swayed by "
           f"other jobs on the cores than wall time): {cpu}"] if cpu else []),
        "- settings:",
        *settings,
        *tune_line,
        "",
        format_table(report),
        "",
    ])


# -- the run -------------------------------------------------------------------------------------------------------

def _methods_arg(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")
    return tuple(dict.fromkeys(["unguided", *names]))


def _list_arg(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _strengths_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tune-strengths: numbers, e.g. 1,3,8; got {text!r}") from None
    if not values or any(not (v > 0 and v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"--tune-strengths: positive numbers; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=SCRIPT, description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", type=_methods_arg, default=METHODS,
                   help=f"comma-separated rows to run (default all: {','.join(METHODS)}); unguided always runs")
    p.add_argument("--objectives", default="1:1:1", help="nrg-embedded's weights VQ:MQ:TA (default 1:1:1)")
    p.add_argument("--distilled", type=Path, default=None,
                   help="nrg-distilled's reward: an `nrg reward distill` output directory or its reward/")
    p.add_argument("--judge", default="classic", help="NAME=SPEC of the judge best-of-n, fk and judge-gradient "
                   "steer by (default classic; guidance.judges specs)")
    p.add_argument("--judge-objectives", type=_list_arg, default=DEFAULT_JUDGE_OBJECTIVES,
                   help=f"the judge's objectives, weighted 1 each (default {','.join(DEFAULT_JUDGE_OBJECTIVES)}); "
                        "judge-gradient keeps the differentiable ones")
    p.add_argument("--particles", type=int, default=4, help="N of best-of-n and fk (default 4)")
    p.add_argument("--judge-strength", type=float, default=DEFAULT_JUDGE_STRENGTH,
                   help=f"judge-gradient's relative strength without --tune (default {DEFAULT_JUDGE_STRENGTH:g}, "
                        "the built-in relative strength, untuned)")
    p.add_argument("--tune", action="store_true",
                   help="choose judge-gradient's strength among --tune-strengths by the judge, on tuning seeds")
    p.add_argument("--tune-strengths", type=_strengths_arg, default=DEFAULT_TUNE_STRENGTHS,
                   help="strengths --tune tries (default 1,3,8)")
    p.add_argument("--tune-seeds", type=int, default=1, help="tuning seeds per prompt for --tune (default 1)")
    p.add_argument("--classic-objectives", type=_list_arg, default=DEFAULT_JUDGE_OBJECTIVES,
                   help="the classic judge's column group (default the judge objectives' default)")
    p.add_argument("--prompts", type=int, default=None, help="the first N held-out demo prompts (default all 8)")
    p.add_argument("--seeds", type=int, default=gt.DEFAULT_SEEDS,
                   help=f"report seeds per prompt, one batch each (default {gt.DEFAULT_SEEDS}: 96 clips a row)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the demo's 20)")
    p.add_argument("--fps", type=float, default=16.0, help="frame rate the judges assume (default 16)")
    p.add_argument("--model", type=Path, default=None, help="pipeline directory (default: the embedded demo)")
    p.add_argument("--reward", type=Path, default=None, help="nrg-embedded's reward (default: the embedded one)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--output-file", type=Path, default=None,
                   help="the JSON result, written after every finished (batch, method): the --resume cache")
    p.add_argument("--resume", action="store_true",
                   help="continue the run cached in --output-file (a missing file starts one)")
    p.add_argument("--benchmarks", type=Path, default=None, help="append the dated section to this file "
                   "(docs/benchmarks.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1; got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1; got {args.steps}")
    if args.tune_seeds < 1:
        p.error(f"--tune-seeds must be >= 1; got {args.tune_seeds}")
    if args.resume and args.output_file is None:
        p.error("--resume needs --output-file (the cache)")
    if args.output_file is not None and args.output_file.exists() and not args.resume:
        p.error(f"{args.output_file} exists: pass --resume to continue it, or remove it")
    if not args.judge_objectives:
        p.error("--judge-objectives: give at least one objective")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.judges import load_judge, parse_named_spec
    from guidance.judges.classic import ClassicJudge
    from guidance.sampler import SampleSpec, sample

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or DEFAULT_STEPS
    prompts = [p.text for p in world.eval_prompts()]
    if args.prompts is not None:
        if not 1 <= args.prompts <= len(prompts):
            raise ValueError(f"--prompts must be between 1 and {len(prompts)}; got {args.prompts}")
        prompts = prompts[:args.prompts]
    judge_name, judge_spec = parse_named_spec(args.judge)
    if judge_spec.startswith("demo_world."):
        raise ValueError(f"--judge {args.judge}: the ground truth judges every row, so no row may steer by it "
                         "(its ceiling is `nrg eval --oracle`)")
    judge = load_judge(judge_spec, device)
    unknown = [o for o in args.judge_objectives if o not in judge.objectives]
    if unknown:
        raise ValueError(f"--judge-objectives {unknown} are not the judge {judge_name}'s; "
                         f"it has {list(judge.objectives)}")
    classic = ClassicJudge(args.classic_objectives)
    family = load_pipeline(args.model or DEFAULT_MODEL_DIR, device=device)
    config = {"model": str(args.model or DEFAULT_MODEL_DIR), "steps": steps, "prompts": prompts,
              "seed_base": world.EVAL_SEED_BASE,
              "shape": [DEFAULT_SHAPE.frames, DEFAULT_SHAPE.height, DEFAULT_SHAPE.width],
              "classic_objectives": list(args.classic_objectives), "fps": args.fps, "device": device}
    cached = _load(args.output_file) if args.resume and args.output_file.is_file() else None

    tune = cached.get("tune") if cached else None
    methods = build_methods(args, family, judge, judge_name, tune)

    # Untimed warm-up of each method on one clip (first-call allocations, lazy inits; the decoder once, with
    # the unguided clip), on a tuning seed; a method whose guidance is refused (ValueError, e.g.
    # guidance.batch_state.check_specs) is unavailable.
    warm = (prompts[0], gt.TUNE_SEED_BASE)
    for method in methods.values():
        if method.reason is None:
            try:
                sample(family, [SampleSpec(warm[0], seed=warm[1], guidance=method.guidance)], DEFAULT_SHAPE,
                       min(steps, WARMUP_STEPS), method.reward, decode=method.name == "unguided")
            except ValueError as exc:
                method.reason = str(exc)
                log(f"{method.name}: unavailable: {exc}")
    gradient = methods.get("judge-gradient")
    if args.tune and gradient is not None and gradient.reason is None and tune is None:
        tune = tune_judge_gradient(family, gradient, judge, prompts, args.tune_seeds, steps, args.tune_strengths,
                                   device, args.fps, log)
        strength, source = judge_gradient_strength(args, tune)
        gradient.guidance = replace(gradient.guidance, strength=strength)
        gradient.setting.update(strength=strength, strength_source=source)
    if cached is not None:
        check_resumable(cached, config, methods)

    report: dict[str, Any] = {
        "benchmark": "steering_per_compute",
        "command": " ".join([SCRIPT, *(shlex.quote(a) for a in args.argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": gt.device_text(device), "torch": torch.__version__, "cores": os.cpu_count() or 1,
        "load_start": list(os.getloadavg()), "config": config, "cfg": family.default_cfg,
        "metrics_version": METRICS_VERSION, "judge": {"name": judge_name, "spec": judge_spec},
        "methods": {}, "tune": tune, "batches": {}, "runs": [],
    }
    if cached is not None:
        report.update(batches=cached.get("batches", {}), methods=cached.get("methods", {}), runs=cached.get("runs", []))
    report["runs"].append({"command": report["command"], "date": report["date"]})
    for name, method in methods.items():
        has_records = any(name in batch for batch in report["batches"].values())
        if method.reason is not None and has_records:
            log(f"{name}: not run now ({method.reason}); its cached clips are kept")
            continue
        report["methods"][name] = {"setting": method.setting, "reason": method.reason}
    runnable = [name for name in args.methods if methods[name].reason is None]

    def save() -> None:
        if args.output_file is not None:
            _save(args.output_file, report)

    save()
    todo = {b: [m for m in runnable if m not in report["batches"].get(str(b), {})] for b in range(args.seeds)}
    left = sum(len(v) for v in todo.values())
    bar = tqdm(total=args.seeds * len(runnable), initial=args.seeds * len(runnable) - left, desc="steering",
               unit="row-batch", disable=args.no_progress)
    for b in range(args.seeds):
        if not todo[b]:
            continue
        items = [(text, world.EVAL_SEED_BASE + b) for text in prompts]
        batch = report["batches"].setdefault(str(b), {})
        # Every row of the batch and the unguided pass its time is divided by, in an order rotated from batch
        # to batch so that no row always runs first; a row's record is written once that pass has run.
        order = ["unguided"] + [m for m in todo[b] if m != "unguided"]
        order = order[b % len(order):] + order[:b % len(order)]
        pending: dict[str, dict[str, Any]] = {}
        unguided_seconds = unguided_cpu = None
        for name in order:
            bar.set_postfix_str(f"seed {items[0][1]}: {name}")
            try:
                seconds, cpu, result = run_clips(family, methods[name], items, steps, device)
            except ValueError as exc:
                if name == "unguided":
                    raise
                methods[name].reason = report["methods"][name]["reason"] = str(exc)
                log(f"{name}: unavailable: {exc}")
                continue
            if name == "unguided":
                unguided_seconds, unguided_cpu = seconds, cpu
            if name != "unguided" or "unguided" not in batch:  # a cached unguided pass is only timed again
                pending[name] = {"seconds": seconds, "cpu_seconds": cpu,
                                 "clips": clip_records(result, items, classic, args.fps)}
            if unguided_seconds is not None and pending:
                for done, rec in pending.items():
                    batch[done] = {**rec, "unguided_seconds": unguided_seconds, "unguided_cpu_seconds": unguided_cpu}
                    bar.update(1)
                pending = {}
                save()
        todo.update({c: [m for m in todo[c] if methods[m].reason is None] for c in todo})
    bar.close()
    report["load_end"] = list(os.getloadavg())
    report["seeds"] = [world.EVAL_SEED_BASE + int(b) for b in sorted(report["batches"], key=int)]
    report["rows"] = summarise(report)
    report["table"] = format_table(report)
    save()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(text: str) -> None:
        print(f"[steering_per_compute] {text}", file=sys.stderr, flush=True)

    try:
        report = run(args, log)
    except ValueError as exc:
        print(f"{SCRIPT}: error: {exc}", file=sys.stderr)
        return 2
    section = benchmark_section(report)
    print(section)
    if args.benchmarks is not None:
        gt.append_section(args.benchmarks, section)
        log(f"appended to {args.benchmarks}")
    if max(report["load_start"][0], report["load_end"][0]) > report["cores"]:
        log("warning: the load average exceeded the core count; the time multiples are less reliable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
