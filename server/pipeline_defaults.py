"""A pipeline directory's own defaults: ``nrg_defaults.json`` beside ``model_index.json``.

A family's built-in defaults are those of its full-size model (LTX: 161 frames at 704x512, 50 steps),
so a tiny pipeline from ``nrg make-tiny`` run without ``--size``/``--frames`` took minutes to make a
black video. ``nrg make-tiny`` writes small defaults into the directory; ``nrg generate`` and
``nrg serve`` use a directory's file when it has one (any directory may carry one), and the family's
defaults otherwise. The file is checked against the family's shape rules when it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from guidance.families.base import PipelineFamily, VideoShape

FILENAME = "nrg_defaults.json"
#: What ``nrg make-tiny`` writes: small enough for a CPU second, valid for every family's tiny config.
TINY = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 4}
TINY_BY_FAMILY = {"ltx": {**TINY, "width": 64}}


@dataclass(frozen=True)
class PipelineDefaults:
    shape: VideoShape
    steps: int


def write(directory: Path, family: str) -> Path:
    """Write the tiny defaults of ``family`` into ``directory``; the file's path."""
    path = Path(directory) / FILENAME
    path.write_text(json.dumps(TINY_BY_FAMILY.get(family, TINY), indent=2) + "\n")
    return path


def read(directory: Path, family: PipelineFamily) -> PipelineDefaults:
    """The directory's defaults (each key optional), else the family's; ``ValueError`` naming the file."""
    path = Path(directory) / FILENAME
    base = family.default_shape
    if not path.is_file():
        return PipelineDefaults(base, family.default_steps)
    try:
        given = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    known = {"width", "height", "num_frames", "num_inference_steps"}
    if not isinstance(given, dict) or set(given) - known:
        raise ValueError(f"{path}: must be an object with keys among {', '.join(sorted(known))}")
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{path}: {key} must be a positive integer; got {value!r}")
    shape = VideoShape(height=given.get("height", base.height), width=given.get("width", base.width),
                       frames=given.get("num_frames", base.frames))
    try:
        family.check_shape(shape)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return PipelineDefaults(shape, given.get("num_inference_steps", family.default_steps))
