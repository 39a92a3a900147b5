"""Flow-RWR (``--method flow-rwr``): flow matching on scored clips, each weighted by exp(reward / tau).
Its task: :mod:`.flow_rwr_task`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidance.align.methods.base import Method, Options, option


@dataclass(frozen=True)
class RwrOptions(Options):
    title = "Flow-RWR"
    tau: float = option(1.0, "Flow-RWR temperature: weights exp(r / tau) (default %(default)g)",
                        (lambda v: v > 0 and math.isfinite(v), "a positive number"))


FLOW_RWR = Method("flow-rwr", data="clips", options=(RwrOptions,), task="guidance.align.methods.flow_rwr_task:build")
