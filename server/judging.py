"""Held-out judges: the operator's judges (``nrg serve --judge NAME=SPEC``) scoring finished videos.

A job's ``rewards`` are what guidance pushed up, so they cannot tell whether steering helped: the
reward was optimised and will look good. A judge the job was not steered by scores the decoded video
and the prompt's text independently; its figures are the job's ``judge_scores``. A judge that fails
costs the job its scores from that judge (logged), never the video.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from guidance.judges import NamedJudge, load_judge, parse_named_spec

log = logging.getLogger("nrg.server")


def parse_judge_flags(items: Sequence[str]) -> dict[str, str]:
    """``--judge NAME=SPEC`` values -> {name: spec}; a name given twice is an error."""
    judges: dict[str, str] = {}
    for item in items:
        name, spec = parse_named_spec(item)
        if name in judges:
            raise ValueError(f"--judge {name} given twice")
        judges[name] = spec
    return judges


def load_judges(specs: Mapping[str, str], device: str) -> dict[str, NamedJudge]:
    """Every configured judge on ``device`` (fails fast, naming the judge)."""
    loaded = {}
    for name, spec in specs.items():
        log.info("loading judge %s (%s) on %s", name, spec, device)
        loaded[name] = NamedJudge(name, spec, load_judge(spec, device))
    return loaded


@dataclass(frozen=True)
class HeldOutJudges:
    """The loaded judges by name, and the scoring of finished clips by those each job asked for."""

    judges: Mapping[str, NamedJudge]

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: Sequence[float],
              wanted: Sequence[Sequence[str]]) -> list[dict[str, dict[str, float]] | None]:
        """Per clip, {judge: {objective: score}} for the judges in its ``wanted`` list (None for a clip
        that wanted none). ``frames`` [B, F, H, W, 3] in [0, 1]; clips are scored in groups of one fps."""
        out: list[dict[str, dict[str, float]] | None] = [None] * len(prompts)
        for name, named in self.judges.items():
            rows = [i for i, names in enumerate(wanted) if name in names]
            for rate in sorted({fps[i] for i in rows}):
                group = [i for i in rows if fps[i] == rate]
                try:
                    with torch.no_grad():
                        scores = named.judge.score(frames[group], [prompts[i] for i in group], rate).tolist()
                except Exception:  # noqa: BLE001 - a judge's fault must not lose the video
                    log.exception("judge %s failed on %d clip(s); their judge_scores leave it out", name, len(group))
                    continue
                for i, row in zip(group, scores):
                    out[i] = {**(out[i] or {}), name: {k: round(v, 6) for k, v in zip(named.objectives, row)}}
        return out
