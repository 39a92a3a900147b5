"""A latent reward for any pipeline, distilled from a judge (``nrg reward distill``).

No public latent reward model exists for public video models, so a user's own model gets one here,
from their diffusers directory, a prompt file and a judge (``guidance.judges``), in five resumable
stages under one output directory:

1. ``pool/``: per prompt, ``pool`` unguided samples with the sampler states of the guidance window
   recorded (``guidance.sampler.sample_with_states``); each sample's decoded frames scored by the
   judge. One file per prompt, so an interrupted run resumes at the next prompt.
2. ``data/``: every within-prompt pair, labelled per objective by the judge: "tie" when the scores
   differ by less than ``tie_share`` x the objective's spread over the pool, else the higher one wins.
   Prompts are split by a hash: ``test_share`` of them are held out (never trained on).
3. ``reward/``: the latent reward model trained on those pairs (``guidance.train.reward``), half
   of them on the recorded states, then calibrated on the pool's own unguided samples (z-scores).
4. ``tune.json``: the guidance strength, chosen on tuning prompts (training prompts) and tuning
   seeds by the judge's verdict on guided against unguided samples, not by the reward's.
5. ``report.json``: on the held-out prompts with report seeds, the judge's verdict on guided vs
   unguided, per objective (win rate over decisive pairs, 95% interval), beside what the reward
   itself says; ``reward_hacking`` lists objectives whose reward rose while the judge's score fell.

Image-to-video: the prompts file is JSONL and gives each prompt its first frame (:func:`read_prompt_file`).
Every sample of a prompt (pool, tuning, report) starts from its image, the pairs record it, and the reward
is trained under its conditioning; the judge scores the decoded frames and the prompt's text as ever.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from guidance.families.base import PipelineFamily, VideoShape
from guidance.images import fit_image, read_image
from guidance.judges import Judge
from guidance.nrg import DEFAULT_WINDOW
from guidance.reward_model import (LatentRewardModel, RewardCalibration, load_reward_model, write_calibration,
                                   write_guidance_defaults)
from guidance.sample_types import SampleSpec
from guidance.sampler import sample, sample_with_states
from guidance.train.reward import PromptCache, TrainConfig
from guidance.win_rates import WinRate, win_rate

#: Seeds of the pool, the tuning runs and the report runs never overlap.
POOL_SEED_BASE = 700_000
TUNE_SEED_BASE = 800_000
REPORT_SEED_BASE = 900_000


@dataclass(frozen=True)
class DistillConfig:
    """Everything ``nrg reward distill`` decides; ``validate`` names the field of a bad value."""

    prompts: tuple[str, ...]
    shape: VideoShape
    steps: int
    judge_name: str
    objectives: tuple[str, ...] | None = None
    pool: int = 4
    test_share: float = 0.2
    tie_share: float = 0.1
    batch: int = 8
    window: tuple[float, float] = DEFAULT_WINDOW
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, trajectory_share=0.5))
    strengths: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    tune_prompts: int = 4
    tune_seeds: int = 2
    report_seeds: int = 4
    #: Image-to-video: each prompt's first frame (an image file; ``None`` for a prompt without one, where
    #: the model allows it), in the order of ``prompts``; empty for text-to-video.
    images: tuple[Path | None, ...] = ()

    def validate(self) -> None:
        if len(self.prompts) < 2:
            raise ValueError(f"prompts: need at least 2 distinct prompts (some are held out); got {len(self.prompts)}")
        if self.images and len(self.images) != len(self.prompts):
            raise ValueError(f"images: need one per prompt ({len(self.prompts)}); got {len(self.images)}")
        if not 2 <= self.pool <= 16:
            raise ValueError(f"pool must be between 2 and 16 samples per prompt; got {self.pool}")
        if not 0.0 < self.test_share < 1.0:
            raise ValueError(f"test_share must be in (0, 1); got {self.test_share}")
        if self.tie_share < 0:
            raise ValueError(f"tie_share must be >= 0; got {self.tie_share}")
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"steps and batch must be >= 1; got {self.steps}, {self.batch}")
        if not self.strengths or any(s <= 0 for s in self.strengths):
            raise ValueError(f"strengths must be positive; got {list(self.strengths)}")
        if min(self.tune_prompts, self.tune_seeds, self.report_seeds) < 1:
            raise ValueError("tune_prompts, tune_seeds and report_seeds must be >= 1")


def read_prompts(path: str | Path) -> tuple[str, ...]:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped; repeats are dropped."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    prompts = tuple(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line; # starts a comment)")
    return prompts


#: The suffix of a prompts file whose lines are JSON objects, each a prompt and its first frame.
PROMPT_IMAGES_SUFFIX = ".jsonl"
IMAGE_PROMPT_LINE = '{"prompt": ..., "image": ...}'


@dataclass(frozen=True)
class PromptFile:
    """A prompts file as read: its prompts (each once), the line each comes from and, image-to-video,
    each one's first frame (``None`` where a line gives none; all ``None`` for a plain-text file)."""

    path: Path
    prompts: tuple[str, ...]
    lines: tuple[int, ...]
    images: tuple[Path | None, ...]

    @property
    def has_images(self) -> bool:
        """Whether some line gives an image (image-to-video)."""
        return any(image is not None for image in self.images)

    def check_images(self, family: PipelineFamily) -> None:
        """``ValueError`` naming the file and line of the first prompt without an image for a model that
        needs one, or with an image for a text-to-video model."""
        mode = family.image_input
        for prompt_line, image in zip(self.lines, self.images):
            where = f"{self.path} line {prompt_line}"
            if image is None and mode == "required":
                raise ValueError(f"{where}: no image; this {family.label} model is image-to-video: give every prompt "
                                 f"its first frame in a {PROMPT_IMAGES_SUFFIX} prompts file of {IMAGE_PROMPT_LINE} "
                                 "lines (docs/image-to-video.md)")
            if image is not None and mode == "none":
                raise ValueError(f"{where}: image: this {family.label} model is text-to-video only; it takes no image")


def read_prompt_file(path: str | Path) -> PromptFile:
    """A ``.jsonl`` prompts file, one ``{"prompt": TEXT, "image": PATH}`` a line (``image`` optional;
    a relative path is the file's directory's; the image must decode), or a text file of one prompt a
    line (:func:`read_prompts`). Blank lines are skipped; a repeated line is dropped, and a repeated
    prompt with another image is an error: a prompt names its pool, its split and its image."""
    path = Path(path)
    if path.suffix != PROMPT_IMAGES_SUFFIX:
        first_lines: dict[str, int] = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            first_lines.setdefault(line.strip(), number)
        prompts = read_prompts(path)
        return PromptFile(path, prompts, tuple(first_lines[p] for p in prompts), (None,) * len(prompts))
    from guidance.train.preference_data import jsonl_rows

    seen: dict[str, tuple[int, Path | None]] = {}
    for number, where, row in jsonl_rows(path, ("prompt",)):
        unknown = sorted(set(row) - {"prompt", "image"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} (a line is {IMAGE_PROMPT_LINE})")
        image = None if row.get("image") is None else _prompt_image(path.parent, row["image"], f"{where}: image")
        prompt = row["prompt"].strip()
        if prompt in seen and seen[prompt][1] != image:
            raise ValueError(f"{where}: prompt repeats line {seen[prompt][0]}'s with another image; give each prompt "
                             "once (it names its samples, its split and its image)")
        seen.setdefault(prompt, (number, image))
    if not seen:
        raise ValueError(f"{path}: no prompts (one JSON object a line: {IMAGE_PROMPT_LINE})")
    return PromptFile(path, tuple(seen), tuple(n for n, _ in seen.values()), tuple(i for _, i in seen.values()))


def _prompt_image(folder: Path, value: Any, where: str) -> Path:
    """A prompt's image file (relative to the prompts file's folder unless absolute), checked to decode."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: must be the path of an image file (a string); got {value!r}")
    image = folder / value
    try:
        read_image(image)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return image


def held_out(prompt: str, share: float) -> bool:
    """Whether a prompt belongs to the test split: a hash, so adding prompts never moves the others."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def split_prompts(prompts: Sequence[str], share: float) -> tuple[list[str], list[str]]:
    """(train, test); at least one prompt on each side, whatever the hash says."""
    test = [p for p in prompts if held_out(p, share)]
    train = [p for p in prompts if p not in test]
    if not test:
        test, train = [train[-1]], train[:-1]
    if not train:
        train, test = [test[0]], test[1:]
    return train, test


def label(a: float, b: float, margin: float) -> str:
    if abs(a - b) < margin or (margin == 0 and a == b):
        return "tie"
    return "A" if a > b else "B"


def judge_columns(judge: Judge, objectives: Sequence[str] | None) -> tuple[list[str], list[int]]:
    names = list(objectives or judge.objectives)
    unknown = [o for o in names if o not in judge.objectives]
    if unknown:
        raise ValueError(f"objectives {unknown} are not the judge's; it has {list(judge.objectives)}")
    return names, [judge.objectives.index(o) for o in names]


class Distiller:
    """The five stages of the module docstring over one output directory (each skipped when done)."""

    def __init__(self, family: PipelineFamily, judge: Judge, config: DistillConfig, out_dir: str | Path,
                 fps: float = 16.0, progress: bool = True, log: Callable[[str], None] = print,
                 held_out: Mapping[str, Judge] | None = None) -> None:
        config.validate()
        self.family, self.judge, self.config, self.fps = family, judge, config, fps
        #: Judges the reward never saw, scoring the report's videos too (name -> judge).
        self.held_out = dict(held_out or {})
        self.out = Path(out_dir)
        self.progress, self.log = progress, log
        self.objectives, self.columns = judge_columns(judge, config.objectives)
        self.train_prompts, self.test_prompts = split_prompts(config.prompts, config.test_share)
        #: Image-to-video: each prompt's image file, and the image fitted to the clips' size once read.
        self.image_files: dict[str, Path | None] = dict(zip(config.prompts, config.images))
        self._fitted_images: dict[Path, Any] = {}

    def image(self, prompt: str) -> Any:
        """The first frame a sample of ``prompt`` starts from, fitted to the clips' size as a served job's
        image is (``guidance.images``); ``None`` for text-to-video."""
        path = self.image_files.get(prompt)
        if path is None:
            return None
        if path not in self._fitted_images:
            self._fitted_images[path] = fit_image(read_image(path), self.config.shape.width, self.config.shape.height)
        return self._fitted_images[path]

    # -- 1. pool ------------------------------------------------------------------------------------
    def _judged(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.judge.score(frames, list(prompts), self.fps)[:, self.columns].float().cpu()

    def sample_pool(self) -> None:
        """Every prompt's pool not on disk yet, as many prompts a batch as ``batch`` samples allow."""
        cfg, folder = self.config, self.out / "pool"
        folder.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(len(cfg.prompts)) if not (folder / f"{i:05d}.safetensors").is_file()]
        per_batch = max(1, cfg.batch // cfg.pool)
        bar = tqdm(total=len(cfg.prompts), initial=len(cfg.prompts) - len(todo), desc="pool", unit="prompt",
                   disable=not self.progress)
        for first in range(0, len(todo), per_batch):
            group = todo[first:first + per_batch]
            specs = [SampleSpec(cfg.prompts[i], seed=POOL_SEED_BASE + cfg.pool * i + j,
                                image=self.image(cfg.prompts[i])) for i in group for j in range(cfg.pool)]
            result, states, levels = sample_with_states(self.family, specs, cfg.shape, cfg.steps, cfg.window)
            scores = self._judged(result.frames, [s.prompt for s in specs])
            latents = result.latents.float().cpu()
            for n, i in enumerate(group):
                rows = slice(n * cfg.pool, (n + 1) * cfg.pool)
                path = folder / f"{i:05d}.safetensors"
                tmp = path.with_suffix(".tmp")
                save_file({"latents": latents[rows].contiguous(), "trajectory": states[rows].contiguous(),
                           "trajectory_t": torch.tensor(levels, dtype=torch.float32),
                           "scores": scores[rows].contiguous()}, str(tmp), metadata={"prompt": cfg.prompts[i]})
                tmp.replace(path)
            bar.update(len(group))
        bar.close()

    @cached_property
    def pool(self) -> list[dict[str, torch.Tensor]]:
        """Every prompt's pool, read once (after :meth:`sample_pool`)."""
        return [load_file(str(self.out / "pool" / f"{i:05d}.safetensors")) for i in range(len(self.config.prompts))]

    @cached_property
    def pool_spread(self) -> torch.Tensor:
        """Each objective's standard deviation of the judge's scores over the whole pool [K]."""
        return torch.cat([p["scores"] for p in self.pool]).std(0)

    # -- 2. pairs -----------------------------------------------------------------------------------
    def write_pairs(self) -> dict[str, Any]:
        from guidance.train.preference_data import write_pairs

        cfg, pool = self.config, self.pool
        margins = {o: float(cfg.tie_share * self.pool_spread[k]) for k, o in enumerate(self.objectives)}
        records, counts = [], {o: {"A": 0, "B": 0, "tie": 0} for o in self.objectives}
        for prompt, part in zip(cfg.prompts, pool):
            split = "test" if prompt in self.test_prompts else "train"
            # One tensor object per sample, so the writer stores each sample once however many pairs it is in.
            latents, states = list(part["latents"]), list(part["trajectory"])
            for a, b in combinations(range(cfg.pool), 2):
                labels = {o: label(float(part["scores"][a, k]), float(part["scores"][b, k]), margins[o])
                          for k, o in enumerate(self.objectives)}
                for o, value in labels.items():
                    counts[o][value] += 1
                records.append({"prompt": prompt, "a": latents[a], "b": latents[b], "labels": labels, "split": split,
                                "shape": cfg.shape, "trajectory_a": states[a], "trajectory_b": states[b],
                                "trajectory_t": part["trajectory_t"], "image": self.image_files.get(prompt)})
        write_pairs(self.out / "data", self.objectives, records, kind="latents", tie_margin=margins,
                    description=f"{len(records)} pairs of {cfg.pool} unguided samples per prompt, labelled by the "
                                f"judge {cfg.judge_name} (tie below {cfg.tie_share} x each objective's pool spread)")
        return {"pairs": len(records), "labels": counts, "tie_margin": margins}

    # -- 3. reward ----------------------------------------------------------------------------------
    def train(self) -> LatentRewardModel:
        from guidance.train.preference_data import load_preference_data
        from guidance.train.reward import train_reward_model

        target = self.out / "reward"
        if not (target / "reward_config.json").is_file():
            data = load_preference_data(self.out / "data", self.family, progress=self.progress)
            train_reward_model(self.family, data, self.config.train, target, progress=self.progress, log=self.log)
            model = load_reward_model(target, self.family)
            pool = self.pool
            latents = torch.cat([p["latents"] for p in pool]).to(self.family.device)
            prompts = [prompt for prompt, p in zip(self.config.prompts, pool) for _ in range(len(p["latents"]))]
            scores = self._reward_scores(model, latents, prompts)
            write_calibration(target, RewardCalibration.from_scores(
                model.objectives, scores, f"nrg reward distill: {len(prompts)} unguided pool samples"))
        return load_reward_model(target, self.family)

    def _reward_scores(self, model: LatentRewardModel, latents: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        rows, conditioning = [], PromptCache(self.family)
        with torch.no_grad():
            for first in range(0, len(prompts), self.config.batch):
                chunk = list(prompts[first:first + self.config.batch])
                cond, _ = self.family.encode_prompts(chunk, None)
                files = [self.image_files.get(p) for p in chunk]
                if any(file is not None for file in files):
                    cond = conditioning.with_images(cond, files, self.config.shape)
                t = torch.zeros(len(chunk), device=latents.device)
                rows.append(model(latents[first:first + len(chunk)], t, cond, self.config.shape).float().cpu())
        return torch.cat(rows)

    # -- 4. tune, 5. report -------------------------------------------------------------------------
    def _run(self, model: LatentRewardModel, prompts: Sequence[str], seeds: Sequence[int], strength: float | None,
             held_out: Mapping[str, Judge] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Judge scores and final rewards [N, K] of every (prompt, seed), guided at ``strength`` (every
        objective weighted 1, the model's mode and window) or unguided (None); and the scores of the
        ``held_out`` judges, by name."""
        defaults = model.guidance_defaults
        guidance = None if strength is None else defaults.complete(dict.fromkeys(model.objectives, 1.0), strength)
        specs = [SampleSpec(p, seed=s, guidance=guidance, image=self.image(p)) for p in prompts for s in seeds]
        judged, rewards, others = [], [], {name: [] for name in held_out or {}}
        for first in range(0, len(specs), self.config.batch):
            chunk = specs[first:first + self.config.batch]
            result = sample(self.family, chunk, self.config.shape, self.config.steps, model)
            texts = [s.prompt for s in chunk]
            judged.append(self._judged(result.frames, texts))
            rewards.append(result.rewards.float().cpu())
            with torch.no_grad():
                for name, judge in (held_out or {}).items():
                    others[name].append(judge.score(result.frames, texts, self.fps).float().cpu())
        return torch.cat(judged), torch.cat(rewards), {name: torch.cat(rows) for name, rows in others.items()}

    def tune(self, model: LatentRewardModel) -> dict[str, Any]:
        path = self.out / "tune.json"
        if path.is_file():
            return json.loads(path.read_text())
        cfg = self.config
        prompts = self.train_prompts[:cfg.tune_prompts]
        seeds = [TUNE_SEED_BASE + j for j in range(cfg.tune_seeds)]
        spread = self.pool_spread.clamp(min=1e-8)
        base, _, _ = self._run(model, prompts, seeds, None)
        rows = []
        for strength in tqdm(cfg.strengths, desc="tune strength", disable=not self.progress):
            guided, _, _ = self._run(model, prompts, seeds, strength)
            gain = ((guided - base) / spread).mean(0)  # the judge's change, in pool spreads, per objective
            rows.append({"strength": strength, "judge_gain": dict(zip(self.objectives, gain.tolist())),
                         "mean_gain": float(gain.mean())})
        best = max(rows, key=lambda r: r["mean_gain"])
        chosen = best["strength"] if best["mean_gain"] > 0 else None
        tuned = {"prompts": prompts, "seeds": seeds, "rows": rows, "strength": chosen,
                 "note": "chosen by the judge's mean gain over the objectives, in pool spreads" if chosen else
                         "no strength raised the judge's mean score: the reward keeps the built-in default"}
        if chosen is not None:
            write_guidance_defaults(self.out / "reward", replace(model.guidance_defaults, strength=chosen,
                                                                 source=f"nrg reward distill: tuned by {cfg.judge_name}"))
        path.write_text(json.dumps(tuned, indent=1))
        return tuned

    def report(self, model: LatentRewardModel, pairs: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        strength = model.guidance_defaults.strength
        seeds = [REPORT_SEED_BASE + j for j in range(cfg.report_seeds)]
        base_judge, base_reward, base_others = self._run(model, self.test_prompts, seeds, None, self.held_out)
        judge, reward, others = self._run(model, self.test_prompts, seeds, strength, self.held_out)
        verdict, hacking = {}, []
        for k, o in enumerate(self.objectives):
            rate: WinRate = win_rate((judge[:, k] - base_judge[:, k]).tolist(), pairs["tie_margin"][o])
            reward_gain = float((reward[:, k] - base_reward[:, k]).mean())
            judge_gain = float((judge[:, k] - base_judge[:, k]).mean())
            verdict[o] = {"judge": rate.to_json(), "judge_mean_change": judge_gain, "reward_mean_change": reward_gain}
            if reward_gain > 0 and rate.rate is not None and rate.rate < 0.5:
                hacking.append(o)
        held_out_verdicts = {}
        for name, judge_ in self.held_out.items():
            margins = base_others[name].std(0) * cfg.tie_share if len(base_others[name]) > 1 else torch.zeros(
                len(judge_.objectives))
            held_out_verdicts[name] = {o: {"judge": win_rate((others[name][:, k] - base_others[name][:, k]).tolist(),
                                                             float(margins[k])).to_json(),
                                           "judge_mean_change": float((others[name][:, k] - base_others[name][:, k]).mean())}
                                       for k, o in enumerate(judge_.objectives)}
        training = json.loads((self.out / "reward" / "training_report.json").read_text())
        report = {
            "judge": cfg.judge_name, "objectives": self.objectives, "prompts": {"train": len(self.train_prompts),
                                                                               "test": len(self.test_prompts)},
            "pairs": pairs, "training": {k: training.get(k) for k in ("accuracy", "trajectory_state_pairs", "steps", "seconds")},
            "tune": tuned, "guided_vs_unguided": {"strength": strength, "mode": model.guidance_defaults.mode,
                                                  "prompts": self.test_prompts, "seeds": seeds,
                                                  "per_objective": verdict, "held_out_judges": held_out_verdicts},
            "reward_hacking": hacking, "config": _jsonable(asdict(cfg)),
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=1))
        return report

    def run(self) -> dict[str, Any]:
        self.log(f"distilling {self.config.judge_name} ({', '.join(self.objectives)}) into a latent reward: "
                 f"{len(self.train_prompts)} training and {len(self.test_prompts)} held-out prompts, "
                 f"{self.config.pool} samples each")
        self.sample_pool()
        pairs = self.write_pairs()
        model = self.train()
        tuned = self.tune(model)
        return self.report(load_reward_model(self.out / "reward", self.family), pairs, tuned)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_report(report: dict[str, Any]) -> str:
    """The report as a person reads it: the held-out judge's verdict first, the reward's beside it."""
    g = report["guided_vs_unguided"]
    lines = [f"held-out prompts: {report['prompts']['test']}, seeds {len(g['seeds'])}; guided at strength "
             f"{g['strength']:g} ({g['mode']}) vs unguided, judged by {report['judge']} (not optimised):",
             f"{'objective':<22} {'judge wins':>10} {'losses':>7} {'ties':>5} {'win rate [95% CI]':>22} "
             f"{'judge change':>13} {'reward change':>14}"]
    for o, row in g["per_objective"].items():
        j = row["judge"]
        ci = "-" if j["ci95"] is None else f"{j['rate']:.2f} [{j['ci95'][0]:.2f}, {j['ci95'][1]:.2f}]"
        lines.append(f"{o:<22} {j['wins']:>10} {j['losses']:>7} {j['ties']:>5} {ci:>22} "
                     f"{row['judge_mean_change']:>+13.4f} {row['reward_mean_change']:>+14.4f}")
    for name, verdicts in g.get("held_out_judges", {}).items():
        lines.append(f"held-out judge {name} (neither optimised nor distilled; ties below {report['config']['tie_share']}"
                     " x its unguided spread):")
        for o, row in verdicts.items():
            j = row["judge"]
            ci = "-" if j["ci95"] is None else f"{j['rate']:.2f} [{j['ci95'][0]:.2f}, {j['ci95'][1]:.2f}]"
            lines.append(f"{o:<22} {j['wins']:>10} {j['losses']:>7} {j['ties']:>5} {ci:>22} "
                         f"{row['judge_mean_change']:>+13.4f}")
    if report["reward_hacking"]:
        lines.append("REWARD HACKING: the reward rose while the judge fell on " + ", ".join(report["reward_hacking"]))
    return "\n".join(lines)
