"""Hybrid offline-online (``--method hybrid``): cycles of offline Flow-DPO steps (the composable
options apply) and online steps of flow matching on the base model's own samples. Its task:
:mod:`.hybrid_task`."""

from __future__ import annotations

from dataclasses import dataclass

from guidance.align.methods.base import Method, Options, option
from guidance.align.methods.flow_dpo import IsDaaOptions, TvkdOptions, UapaOptions
from guidance.align.methods.shared import OnlineOptions


@dataclass(frozen=True)
class HybridOptions(Options):
    title = "hybrid offline-online"
    hybrid_offline: int = option(4, "hybrid: N offline DPO steps (default %(default)s)", (lambda v: v >= 1, ">= 1"))
    hybrid_online: int = option(1, "hybrid: M online steps per cycle (default %(default)s; 0: Flow-DPO)",
                                (lambda v: v >= 0, ">= 0"))
    online_prompts: str | None = option(None, "hybrid: prompt file, one a line (default: the data's prompts)", type=str)


HYBRID = Method("hybrid", data="pairs", options=(HybridOptions, OnlineOptions, IsDaaOptions, TvkdOptions, UapaOptions),
                task="guidance.align.methods.hybrid_task:build")
