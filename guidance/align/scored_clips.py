"""Scored clips for Flow-RWR: the on-disk format, its loader and a writer.

A scored-clips data set is a directory with the same ``dataset.json`` as a preference data set (so one
directory may hold both ``pairs.jsonl`` and ``clips.jsonl``; documented in docs/align.md)::

    dataset.json   {"objectives": ["vq", "mq", "ta"], "description": "..."}
    clips.jsonl    one clip per line:
                   {"prompt": str, "clip": PATH,
                    "rewards": {"mq": 0.42, ...},                      # finite numbers; a missing
                                                                      # objective (or null) is unknown
                    "split": "train" | "test",                          # optional: hash-based 10% test
                    "shape": {"frames": F, "height": H, "width": W}}    # optional, as for pairs

PATH is relative to the directory: a ``.npy`` / ``.mp4`` clip or ``.safetensors`` latents, read
exactly as the clips of ``pairs.jsonl`` are (``preference_data.load_latents``). Rewards may come from
people, a judge, or a latent reward model at t = 0; their scale matters only through ``tau``.
Everything is validated with errors that name the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.preference_data import (
    LATENT_KEY,
    SPLITS,
    TEST_EVERY,
    PreferenceDataError,
    check_known_objectives,
    check_objective,
    row_split_and_shape,
    _check_objectives,
    _clip_path,
    jsonl_rows,
    load_latents,
    read_dataset_info,
    refuse_empty,
    write_record_line,
)

CLIPS_FILE = "clips.jsonl"


@dataclass(frozen=True)
class ClipRecord:
    """One validated line of ``clips.jsonl`` (the file exists; its contents are not read yet)."""

    line: int
    prompt: str
    clip: Path
    rewards: dict[str, float]
    split: str
    shape: VideoShape | None = None


@dataclass
class ScoredClips:
    """Loaded clips: clean latents (CPU, float32) and ``rewards[i, k]`` on ``objectives[k]`` (NaN: unknown)."""

    objectives: tuple[str, ...]
    prompts: list[str]
    latents: list[torch.Tensor]
    shapes: list[VideoShape]
    rewards: torch.Tensor
    test: torch.Tensor
    lines: list[int]
    description: str = ""
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def indices(self, split: str) -> list[int]:
        mask = self.test if split == "test" else ~self.test
        return [int(i) for i in torch.nonzero(mask).flatten()]

    def combined(self, weights: dict[str, float]) -> torch.Tensor:
        """r = sum_k w_k r_k per clip [N]; NaN where a weighted objective is unknown."""
        total = torch.zeros(len(self))
        for name, w in weights.items():
            total = total + w * self.rewards[:, self.objectives.index(name)]
        return total


def default_clip_split(prompt: str, clip: str) -> str:
    """About 1 clip in ``TEST_EVERY`` is held out, by the hash of (prompt, clip)."""
    digest = hashlib.sha256(f"{prompt}\n{clip}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_EVERY == 0 else "train"


def _reward(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PreferenceDataError(f"{where} must be a finite number (or null); got {value!r}")
    return float(value)


def read_clips(data_dir: str | Path) -> tuple[Any, list[ClipRecord]]:
    """Read and validate ``dataset.json`` and ``clips.jsonl`` without opening any clip (fails fast)."""
    info = read_dataset_info(data_dir)
    path = info.root / CLIPS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{info.root} is not a scored-clips data set: {path} does not exist")
    records = []
    for number, where, row in jsonl_rows(path, ("prompt", "clip", "rewards")):
        prompt = row["prompt"]
        clip = _clip_path(info.root, row["clip"], f"{where}: clip")
        rewards = row["rewards"]
        if not isinstance(rewards, dict):
            raise PreferenceDataError(f"{where}: rewards must be an object like {{\"mq\": 0.4}}; got {rewards!r}")
        clean = {}
        for objective, value in rewards.items():
            check_objective(objective, info.objectives, where, "rewards")
            reward = _reward(value, f"{where}: rewards.{objective}")
            if reward is not None:
                clean[objective] = reward
        split, shape = row_split_and_shape(row, where, default_clip_split(prompt, row["clip"]))
        records.append(ClipRecord(number, prompt, clip, clean, split, shape))
    if not records:
        raise PreferenceDataError(f"{path}: no clips")
    return info, records


def load_scored_clips(
    data_dir: str | Path, family: PipelineFamily, objectives: Sequence[str], *, progress: bool = False
) -> ScoredClips:
    """Load the clips that have a reward on every one of ``objectives`` (the others are skipped)."""
    from tqdm.auto import tqdm

    info, records = read_clips(data_dir)
    check_known_objectives(objectives, info.objectives, info.root)
    kept = [r for r in records if all(o in r.rewards for o in objectives)]
    if not kept:
        raise PreferenceDataError(f"{info.root}: no clip has a reward on every one of {', '.join(objectives)}")
    latents, shapes = [], []
    for record in tqdm(kept, desc="loading clips", unit="clip", disable=not progress):
        x, shape = load_latents(family, record.clip, record.shape, f"{CLIPS_FILE} line {record.line}: clip")
        latents.append(x)
        shapes.append(shape)
    return ScoredClips(
        objectives=info.objectives,
        prompts=[r.prompt for r in kept],
        latents=latents,
        shapes=shapes,
        rewards=torch.tensor([[r.rewards.get(o, math.nan) for o in info.objectives] for r in kept]),
        test=torch.tensor([r.split == "test" for r in kept], dtype=torch.bool),
        lines=[r.line for r in kept],
        description=info.description,
        root=info.root,
    )


def write_scored_clips(
    out_dir: str | Path, objectives: Sequence[str], records: Iterable[dict[str, Any]], *, description: str = ""
) -> Path:
    """Write ``clips.jsonl`` (and ``dataset.json`` unless one exists) to ``out_dir``.

    Each record: ``prompt``, ``clip`` (a path relative to ``out_dir`` of an existing clip or latents
    file, e.g. one of ``pairs.jsonl``; or a tensor of latents, written as ``latents/clip_NNNNNN``),
    ``rewards`` ({objective: number}), optionally ``split`` and ``shape``.
    """
    from safetensors.torch import save_file

    objectives = _check_objectives(list(objectives), "objectives")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CLIPS_FILE + ".tmp")
    count = 0
    with tmp.open("w") as lines:
        for i, record in enumerate(records):
            where = f"record {i}"
            missing = [key for key in ("prompt", "clip", "rewards") if key not in record]
            if missing:
                raise PreferenceDataError(f"{where}: missing {', '.join(missing)}")
            clip = record["clip"]
            if isinstance(clip, torch.Tensor):
                (out / "latents").mkdir(exist_ok=True)
                name = f"latents/clip_{i:06d}.safetensors"
                save_file({LATENT_KEY: clip.detach().cpu().float().contiguous()}, str(out / name))
                clip = name
            _clip_path(out, clip, f"{where}: clip")
            rewards = {}
            for objective, value in dict(record["rewards"]).items():
                if objective not in objectives:
                    raise PreferenceDataError(f"{where}: rewards: unknown objective {objective!r}")
                rewards[objective] = _reward(value, f"{where}: rewards.{objective}")
            row: dict[str, Any] = {"prompt": record["prompt"], "clip": clip, "rewards": rewards}
            if record.get("split") is not None:
                if record["split"] not in SPLITS:
                    raise PreferenceDataError(f"{where}: split must be \"train\" or \"test\"; got {record['split']!r}")
                row["split"] = record["split"]
            write_record_line(lines, row, record, where)
            count += 1
    refuse_empty(tmp, count, "write_scored_clips")
    config_path = out / "dataset.json"
    if not config_path.is_file():
        config_path.write_text(json.dumps({"objectives": list(objectives), "description": description}, indent=2) + "\n")
    tmp.replace(out / CLIPS_FILE)
    return out
