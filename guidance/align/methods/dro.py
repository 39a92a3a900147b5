"""Diffusion-DRO (``--method diffusion-dro``): expert clips against online negatives of a lagging copy
of the adapter, with a hinge loss. Its task: :mod:`.dro_task`."""

from __future__ import annotations

from dataclasses import dataclass

from guidance.align.methods.base import Method, Options, option
from guidance.align.methods.shared import OnlineOptions


@dataclass(frozen=True)
class DroOptions(Options):
    title = "Diffusion-DRO"
    dro_margin: float = option(0.001, "Diffusion-DRO margin (default %(default)g)", (lambda v: v >= 0, ">= 0"))
    dro_lag: int = option(10, "steps between lagging-copy refreshes (default %(default)s)", (lambda v: v >= 1, ">= 1"))


DIFFUSION_DRO = Method("diffusion-dro", data="either", options=(DroOptions, OnlineOptions),
                       task="guidance.align.methods.dro_task:build")
