"""The settings of an ``nrg align`` run, in a module light enough for the command line to import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from guidance.align import losses

Method = Literal["flow-dpo", "flow-rwr"]
METHODS: tuple[str, ...] = ("flow-dpo", "flow-rwr")
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: Settings that may differ between a run and its resumption (they do not change any step's result).
RESUMABLE_CHANGES = ("steps", "epochs", "eval_every", "save_every")


@dataclass
class AlignConfig:
    """Everything that shapes an alignment run (stored in the report as ``args``)."""

    method: Method = "flow-dpo"
    objectives: str | None = None  # "vq=1,mq=0.5"; default: every objective of the data, weight 1
    lora_rank: int = 64
    lora_alpha: float = 128.0
    targets: Sequence[str] = DEFAULT_TARGETS
    beta: float = 1000.0
    beta_schedule: losses.BetaSchedule = "constant"
    tau: float = 1.0
    lr: float = 5e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    steps: int | None = None
    epochs: int | None = None  # used when steps is None; default 1
    batch: int = 8
    t_min: float = 0.0
    t_max: float = 1.0
    seed: int = 0
    eval_every: int | None = None  # default: about 10 evaluations per run
    save_every: int | None = None  # default: eval_every

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.beta_schedule not in losses.BETA_SCHEDULES:
            raise ValueError(f"--beta-schedule must be one of {', '.join(losses.BETA_SCHEDULES)}; got {self.beta_schedule!r}")
        checks = [
            ("--lora-rank", self.lora_rank, self.lora_rank >= 1, ">= 1"),
            ("--lora-alpha", self.lora_alpha, self.lora_alpha > 0, "> 0"),
            ("--beta", self.beta, self.beta > 0 and math.isfinite(self.beta), "a positive number"),
            ("--tau", self.tau, self.tau > 0 and math.isfinite(self.tau), "a positive number"),
            ("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--grad-clip", self.grad_clip, self.grad_clip > 0, "> 0 (inf for none)"),
            ("--batch", self.batch, self.batch >= 1, ">= 1"),
            ("--steps", self.steps, self.steps is None or self.steps >= 1, ">= 1"),
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, ">= 1"),
            ("--eval-every", self.eval_every, self.eval_every is None or self.eval_every >= 1, ">= 1"),
            ("--save-every", self.save_every, self.save_every is None or self.save_every >= 1, ">= 1"),
        ]
        for flag, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{flag} must be {rule}; got {value}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= --t-min < --t-max <= 1; got {self.t_min}, {self.t_max}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"--targets must name at least one module, e.g. to_q,to_k,to_v,to_out.0; got {self.targets}")
