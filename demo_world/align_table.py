"""Every ``nrg align`` method side by side on the demo world (``nrg eval --align``; docs/align.md).

One budget for all: the same CPU time of training steps (``nrg align --cpu-budget``; evaluations
excluded), the same LoRA (rank 16, alpha 32 on the attention projections), the same optimizer
(AdamW, lr 1e-4), the same minibatch size, the same seed and one objective (MQ, where the embedded
model is weakest). The pair methods train on the same
base pairs (``nrg demo make-pairs``); Diff-UAPA and its control on the same pairs voted on by three
simulated annotator groups (``nrg demo annotate``); Diffusion-DRO on rendered expert clips. CPU
time, not wall time, is the budget, so a loaded machine changes how long a run takes but hardly
what it learns; online methods sample as they train, so they get far fewer optimizer steps than the
offline ones, and each row reports its steps.

Then every checkpoint is judged against the base model on the held-out prompts and report seeds
(``compare.run_checkpoint_eval``: ground-truth win rates per objective with Wilson intervals and
sign tests), and its **drift** is measured: mean |v_theta - v_ref| of the velocity predictions on
the base model's own held-out samples (the test split of the pairs) forward-noised to t = 0.25,
0.5, 0.75, relative to mean |v_ref|. Finally, Flow-DPO at a low beta with and without the IS-DAA
weight is trained with LoRA snapshots, and each snapshot's MQ win rate against the base traces the
over-optimisation the IS paper targets.

Training runs are subprocesses of ``nrg align`` (``jobs`` at once, one torch thread each, logs
beside their outputs); a run whose ``align_report.json`` exists is skipped and one with a saved
state is resumed (``nrg align --resume``), so an interrupted table continues where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from demo_world.compare import head_to_head, run_checkpoint_eval
from demo_world.evaluate import win_cell
from demo_world.metrics import OBJECTIVES
from guidance.align.lora import STATE_DIR
from guidance.demo import embedded_checkpoints

REPORT_NAME = "align_report.json"
#: The budget every method shares (module docstring).
COMMON = ("--objectives", "mq", "--lora-rank", "16", "--lora-alpha", "32", "--lr", "1e-4", "--batch", "8",
          "--seed", "0")
#: CPU seconds of training steps per run, and the most steps a run may take within them.
CPU_BUDGET_S = 300.0
MAX_STEPS = 400
CURVE_BETA = "100"
DRIFT_T = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class AlignRun:
    """One row of the table: a method with its own documented options on one of the data sets."""

    name: str
    method: str
    data: str  # "pairs", "groups" or "experts"
    options: tuple[str, ...] = ()
    what: str = ""
    #: The run's most steps, when its schedule needs to know them (SPRO's rounds split the steps).
    steps: int | None = None


def runs(reward: str) -> list[AlignRun]:
    """The table's rows, in order (each method at its documented defaults unless named here)."""
    return [
        AlignRun("flow-dpo", "flow-dpo", "pairs", (), "Flow-DPO, constant beta 1000 (the control)"),
        AlignRun("flow-rwr", "flow-rwr", "pairs", ("--tau", "0.1"), "Flow-RWR, weights exp(MQ / 0.1)"),
        AlignRun("is-daa", "flow-dpo", "pairs", ("--is-clip", "0.25"), "Flow-DPO x clipped IS weight, eps 0.25"),
        AlignRun("tvkd", "flow-dpo", "pairs", ("--teacher", reward), "Flow-DPO + TVKD shaping, teacher = the latent reward"),
        AlignRun("dpo-groups", "flow-dpo", "groups", (), "Flow-DPO on the three groups' pooled votes"),
        AlignRun("diff-uapa", "flow-dpo", "groups", ("--uapa-map-ratio", "0.25"), "Flow-DPO + Diff-UAPA Beta-MAP, ratio 0.25"),
        AlignRun("diffusion-dro", "diffusion-dro", "experts", (), "hinge ranking, rendered experts vs lagging-copy samples"),
        AlignRun("sudo", "sudo", "pairs", ("--sudo-transforms", "reverse,shuffle"), "SUDO, losers = reversed / shuffled winners"),
        AlignRun("abc", "abc", "pairs", (), "alignment by classification (our interpretation)"),
        AlignRun("spo", "spo", "pairs", ("--reward-model", reward), "SPO, step-aware scorer = the latent reward"),
        AlignRun("gradspo", "gradspo", "pairs", ("--reward-model", reward), "GradSPO, guidance-vector target + EMA"),
        AlignRun("spro", "spro", "pairs", ("--judge", "demo", "--rounds", "2", "--spro-samples", "2"),
                 "SPRO self-play, 2 rounds of 2 clips a prompt, ground-truth judge", steps=40),
        AlignRun("hybrid", "hybrid", "pairs", (), "4 Flow-DPO steps, then 1 recovery step on base samples"),
    ]


def curve_runs(snapshot_every: int) -> list[AlignRun]:
    """Flow-DPO at a low beta without and with the IS weight, with snapshots (the over-optimisation curve)."""
    snap = ("--beta", CURVE_BETA, "--snapshot-every", str(snapshot_every))
    return [AlignRun("dpo-low-beta", "flow-dpo", "pairs", snap, f"Flow-DPO, beta {CURVE_BETA}"),
            AlignRun("is-daa-low-beta", "flow-dpo", "pairs", snap + ("--is-clip", "0.25"),
                     f"Flow-DPO x IS weight, beta {CURVE_BETA}")]


def command(run: AlignRun, data: Mapping[str, Path], out: Path, steps: int, cpu_budget_s: float) -> list[str]:
    """The ``nrg align`` argv of one run."""
    steps = run.steps or steps
    argv = ["align", "--method", run.method, "--data", str(data[run.data]), "--out", str(out / run.name),
            *COMMON, "--cpu-budget", f"{cpu_budget_s:g}", "--steps", str(steps), "--eval-every", str(max(1, steps // 4)),
            "--quiet", *run.options]
    if run.data == "experts":
        argv += ["--eval-pairs", str(data["pairs"])]
    return argv


def train_all(plan: Sequence[AlignRun], data: Mapping[str, Path], out: Path, steps: int, cpu_budget_s: float,
              jobs: int, log=print) -> dict[str, dict]:
    """Run every missing ``nrg align`` of ``plan``, ``jobs`` at once; returns each run's report."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    todo = [r for r in plan if not (out / r.name / REPORT_NAME).is_file()]
    running: list[tuple[AlignRun, subprocess.Popen, object]] = []
    failed = []
    while todo or running:
        while todo and len(running) < jobs:
            run = todo.pop(0)
            argv = [sys.executable, "-m", "server.cli", *command(run, data, out, steps, cpu_budget_s)]
            if (out / run.name / STATE_DIR).is_dir():  # interrupted: continue from its saved state
                argv.append("--resume")
            log(f"train {run.name}: nrg {' '.join(argv[3:])}")
            (out / run.name).mkdir(parents=True, exist_ok=True)
            handle = (out / f"{run.name}.log").open("w")
            handle.write(f"nrg {' '.join(argv[3:])}\n")
            handle.flush()
            running.append((run, subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env), handle))
        time.sleep(2)
        for item in list(running):
            run, proc, handle = item
            if proc.poll() is None:
                continue
            running.remove(item)
            handle.close()
            if proc.returncode != 0:
                failed.append(f"{run.name} (exit {proc.returncode}, see {out / f'{run.name}.log'})")
            log(f"done {run.name}: exit {proc.returncode}")
    if failed:
        raise RuntimeError("training failed: " + "; ".join(failed))
    return {r.name: json.loads((out / r.name / REPORT_NAME).read_text()) for r in plan}


def drift(checkpoints: Mapping[str, Path], pairs_dir: Path, model: Path | None = None, clips: int = 32,
          seed: int = 0) -> dict[str, dict[str, float]]:
    """{name: {"abs": mean |v_theta - v_ref|, "rel": that / mean |v_ref|}} on ``clips`` held-out base
    samples (the test split's A latents) at each of ``DRIFT_T``, one fixed noise per clip."""
    import torch

    from guidance.checkpoints import CheckpointRegistry
    from guidance.demo import DEFAULT_MODEL_DIR
    from guidance.families import load_pipeline
    from guidance.align.noising import model_timestep
    from guidance.train.preference_data import load_preference_data
    from guidance.train.reward import PromptCache

    family = load_pipeline(model or DEFAULT_MODEL_DIR, device="cpu")
    data = load_preference_data(pairs_dir, family, ["mq"], progress=False)
    test = data.indices("test")[:clips]
    if not test:
        raise ValueError(f"{pairs_dir} has no test pairs to measure drift on")
    registry = CheckpointRegistry(family, checkpoints)
    x0 = torch.stack([data.latents_a[i] for i in test]).float()
    shape = data.shapes[test[0]]
    cond = PromptCache(family)([data.prompts[i] for i in test])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator)

    @torch.no_grad()
    def velocities(name: str | None) -> list[torch.Tensor]:
        registry.activate(name)
        out = []
        for level in DRIFT_T:
            t = torch.full((len(test),), level)
            x_t = family.add_noise(x0, noise, t)
            out.append(family.predict(family.transformer, x_t, model_timestep(family, t), cond, shape).float())
        return out

    ref = velocities(None)
    scale = float(torch.stack([v.abs().mean() for v in ref]).mean())
    result = {}
    for name in checkpoints:
        diff = float(torch.stack([(v - r).abs().mean() for v, r in zip(velocities(name), ref)]).mean())
        result[name] = {"abs": diff, "rel": diff / scale}
    registry.activate(None)
    return result


@dataclass
class TableInputs:
    """Where the table's data and runs live."""

    pairs: Path
    groups: Path
    experts: Path
    out: Path
    reward: Path
    model: Path | None = None


def build_table(inputs: TableInputs, steps: int = MAX_STEPS, cpu_budget_s: float = CPU_BUDGET_S, jobs: int = 2,
                seeds: int = 12, curve_every: int = 40, curve_seeds: int = 6, progress: bool = True,
                command_text: str | None = None, log=print) -> dict:
    """Train (what is missing), judge, measure drift and the IS curve; returns the report."""
    data = {"pairs": inputs.pairs, "groups": inputs.groups, "experts": inputs.experts}
    for key, path in data.items():
        if not path.is_dir():
            raise FileNotFoundError(f"--align needs the {key} data set at {path} (docs/align.md, 'The side-by-side table')")
    plan = runs(str(inputs.reward))
    curve_plan = curve_runs(curve_every)
    started = time.perf_counter()
    reports = train_all(plan + curve_plan, data, inputs.out, steps, cpu_budget_s, jobs, log)
    checkpoints = {r.name: inputs.out / r.name for r in plan}
    embedded = {f"embedded-{name}": path for name, path in embedded_checkpoints().items()} if inputs.model is None else {}
    log("judging every checkpoint against the base model")
    judged = run_checkpoint_eval({**checkpoints, **embedded}, model=inputs.model, reward=inputs.reward, setting=None,
                                 seeds=seeds, progress=progress)
    (inputs.out / "judged.json").write_text(json.dumps(judged))  # kept should the rest fail
    log("measuring drift")
    drifts = drift(checkpoints, inputs.pairs, inputs.model)
    curve = is_curve(curve_plan, inputs, curve_seeds, progress)
    rows = []
    for run in plan:
        row = next(x for x in judged["rows"] if x["config"] == run.name)
        accuracy = reports[run.name].get("implicit_accuracy") or {}
        rows.append({"name": run.name, "method": run.method, "data": run.data, "options": list(run.options),
                     "what": run.what, "stats": row["stats"], "means": row["means"], "drift": drifts[run.name],
                     "cpu_seconds": reports[run.name].get("cpu_seconds"), "steps": reports[run.name]["steps"],
                     "heldout_accuracy": accuracy.get("accuracy"),
                     "against_embedded": {name: head_to_head(judged["per_clip"], run.name, name) for name in embedded}})
    return {
        "command": command_text, "device": judged["device"], "date": judged["date"], "max_steps": steps,
        "budget": " ".join(COMMON) + f" --cpu-budget {cpu_budget_s:g} --steps {steps}", "base_means": judged["means"]["base"],
        "clips": judged["clips_per_config"], "prompts": judged["prompts"], "seeds": judged["seeds"],
        "tie_margin": judged["tie_margin"], "rows": rows, "embedded": {
            name: next(x for x in judged["rows"] if x["config"] == name) for name in embedded}, "curve": curve, "load_average": judged["load_average"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def is_curve(plan: Sequence[AlignRun], inputs: TableInputs, seeds: int, progress: bool) -> dict:
    """MQ (and every objective's) win rate vs base of each snapshot of the low-beta runs."""
    from guidance.align.trainer import SNAPSHOTS

    points = {}
    for run in plan:
        out = inputs.out / run.name
        for snap in sorted((out / SNAPSHOTS).glob("step_*")):
            points[f"{run.name}.{int(snap.name.removeprefix('step_'))}"] = snap
        total = json.loads((out / REPORT_NAME).read_text())["steps"]
        points[f"{run.name}.{total}"] = out
    judged = run_checkpoint_eval(points, model=inputs.model, reward=inputs.reward, setting=None, seeds=seeds,
                                 progress=progress)
    curve: dict[str, list[dict]] = {}
    for row in judged["rows"]:
        name, step = row["config"].rsplit(".", 1)
        curve.setdefault(name, []).append({"step": int(step), "stats": row["stats"], "means": row["means"]})
    return {"clips": judged["clips_per_config"], "beta": CURVE_BETA,
            "runs": {k: sorted(v, key=lambda p: p["step"]) for k, v in curve.items()}}


def format_table(report: dict) -> str:
    """Markdown: the methods table, then the IS curve."""
    embedded = list(report["embedded"])
    lines = ["| method | what | win VQ | win MQ | win TA | mean MQ | drift (rel) | held-out acc | steps |"
             + "".join(f" win MQ vs {name} |" for name in embedded),
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(embedded)]
    for row in report["rows"]:
        cells = " | ".join(win_cell(row["stats"][o]) for o in OBJECTIVES)
        acc = "-" if row["heldout_accuracy"] is None else f"{100 * row['heldout_accuracy']:.1f}%"
        lines.append(f"| {row['name']} | {row['what']} | {cells} | {row['means']['mq']:.3f} | "
                     f"{row['drift']['abs']:.4f} ({100 * row['drift']['rel']:.1f}%) | {acc} | {row['steps']} |"
                     + "".join(f" {win_cell(row['against_embedded'][name]['mq'])} |" for name in embedded))
    for name, row in report["embedded"].items():
        cells = " | ".join(win_cell(row["stats"][o]) for o in OBJECTIVES)
        lines.append(f"| {name} | the committed checkpoint (not retrained) | {cells} | {row['means']['mq']:.3f} | "
                     "- | - | - |" + " - |" * len(embedded))
    base = report["base_means"]
    lines += ["", f"Base model means: VQ {base['vq']:.3f}, MQ {base['mq']:.3f}, TA {base['ta']:.3f}.", "",
              f"IS-DAA curve (beta {report['curve']['beta']}, {report['curve']['clips']} clips per point): "
              "win MQ vs base by training step", "", "| run | step | win VQ | win MQ | win TA | mean MQ |",
              "|---|---|---|---|---|---|"]
    for name, points in report["curve"]["runs"].items():
        for p in points:
            cells = " | ".join(win_cell(p["stats"][o]) for o in OBJECTIVES)
            lines.append(f"| {name} | {p['step']} | {cells} | {p['means']['mq']:.3f} |")
    return "\n".join(lines)


def benchmark_section(report: dict) -> str:
    return "\n".join([
        f"## Alignment methods side by side on the demo world (`nrg eval --align`), {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}; load average before / after judging: "
        f"{report['load_average'][0]:.2f} / {report['load_average'][1]:.2f}",
        f"- budget (every method): `{report['budget']}`; wall {report['wall_seconds'] / 60:.0f} min for the whole table",
        f"- judged on {report['clips']} clips per method ({len(report['prompts'])} held-out prompts x "
        f"{len(report['seeds'])} report seeds {report['seeds'][0]}..{report['seeds'][-1]}), ground-truth metrics; "
        "win cells: win rate % [95% Wilson] wins/decisive, sign-test p, each against the base model",
        "",
        format_table(report),
        "",
    ])

