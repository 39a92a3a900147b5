"""Judges: scorers of decoded video and the prompt's text (see ``base``), and where they come from.

An operator names each judge with a spec; requests name judges only by the operator's names, never by
a spec, so a request can never load code or read a path:

- ``classic`` or ``classic:OBJ,OBJ``: the weight-free measures of ``classic`` (all, or a subset);
- ``clip:DIR``: a CLIP model in a local transformers directory (``clip``);
- ``videoreward:DIR``: VideoAlign's VideoReward in a local directory (``videoreward``);
- ``package.module:factory``: an operator plugin, ``factory(device) -> Judge``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guidance.judges.base import DEFAULT_FPS, Judge, JudgeError, check_clips, check_scores

__all__ = ["DEFAULT_FPS", "BUILT_IN", "Judge", "JudgeError", "NamedJudge", "check_clips", "check_scores",
           "load_judge", "parse_named_spec"]


def _classic(argument: str | None, device: str) -> Judge:
    from guidance.judges.classic import OBJECTIVES, ClassicJudge

    if argument is None:
        return ClassicJudge(OBJECTIVES)
    return ClassicJudge([o.strip() for o in argument.split(",") if o.strip()])


def _directory(kind: str, argument: str | None) -> Path:
    if not argument:
        raise JudgeError(f"judge {kind} needs a local model directory: {kind}:DIR")
    path = Path(argument).expanduser()
    if not path.is_dir():
        raise JudgeError(f"judge {kind}: {path} is not a directory")
    return path


def _clip(argument: str | None, device: str) -> Judge:
    directory = _directory("clip", argument)
    from guidance.judges.clip import load_clip_judge

    return load_clip_judge(directory, device)


def _videoreward(argument: str | None, device: str) -> Judge:
    directory = _directory("videoreward", argument)
    from guidance.judges.videoreward import load_videoreward_judge

    return load_videoreward_judge(directory, device)


#: Built-in judge kinds: ``kind[:argument]`` -> a judge on ``device``.
BUILT_IN: dict[str, Callable[[str | None, str], Judge]] = {
    "classic": _classic, "clip": _clip, "videoreward": _videoreward}


def _plugin(spec: str, device: str) -> Judge:
    module_name, _, factory_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise JudgeError(f"judge plugin {spec}: cannot import {factory_name} from {module_name}: {exc}") from exc
    judge = factory(device)
    if not isinstance(judge, Judge) or not judge.objectives:
        raise JudgeError(f"judge plugin {spec}: the factory must return a Judge (objectives, differentiable, "
                         f"score); got {type(judge).__name__}")
    return judge


def load_judge(spec: str, device: str = "cpu") -> Judge:
    """The judge a spec names (module docstring), on ``device``."""
    kind, _, argument = spec.partition(":")
    if kind in BUILT_IN:
        return BUILT_IN[kind](argument or None, device)
    if "." in kind and argument.isidentifier():
        return _plugin(spec, device)
    raise JudgeError(f"unknown judge {spec!r}: use one of {sorted(BUILT_IN)} (e.g. classic, clip:DIR) or "
                     "package.module:factory")


@dataclass(frozen=True)
class NamedJudge:
    """A judge under the operator's name for it (what requests and reports use)."""

    name: str
    spec: str
    judge: Judge

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.judge.objectives

    @property
    def differentiable(self) -> frozenset[str]:
        return frozenset(self.judge.differentiable)


def parse_named_spec(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> (name, spec); a bare ``classic`` names itself."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = text.partition(":")[0], text
    if not name.isidentifier():
        raise JudgeError(f"judge name {name!r} must be letters, digits and _ (NAME=SPEC, e.g. quality=classic)")
    if not spec:
        raise JudgeError(f"judge {name}: empty spec (NAME=SPEC, e.g. {name}=classic)")
    return name, spec
