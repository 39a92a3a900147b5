"""The settings of an ``nrg align`` run, in a module light enough for the command line to import.

A run has the settings every method shares (the fields of :class:`AlignConfig`: the LoRA, the
optimizer, the run's length and cadence, the range of t) and the options of each option group
(``AlignConfig.options``), which the methods declare in :mod:`guidance.align.methods`. Every setting
has a flat name, its flag's with underscores, unique across the groups: a config is made from flat
names and gives them back flat (:meth:`AlignConfig.settings`), which is what a report stores as
``args`` and what resuming compares, so reports read alike however the options are grouped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar, cast

from guidance.align.beta_schedule import BETA_SCHEDULES, BetaSchedule
from guidance.align.methods.base import Options, flag
from guidance.align.methods.registry import METHODS, OPTION_GROUPS, REGISTRY, methods_taking

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: Settings that may differ between a run and its resumption (they do not change any step's result).
RESUMABLE_CHANGES = ("steps", "epochs", "eval_every", "save_every", "snapshot_every", "cpu_budget_s")

OptionsT = TypeVar("OptionsT", bound=Options)


@dataclass(init=False)
class AlignConfig:
    """Everything that shapes an alignment run: the shared settings below, and in ``options`` every
    option group's (the run's method's and the others', at their defaults unless given, as the
    command line gives every flag).

    Made from flat names: ``AlignConfig(method="sudo", lr=1e-4, sudo_sft=0.3)``.
    """

    method: str = "flow-dpo"  # a name of guidance.align.methods.registry.REGISTRY
    objectives: str | None = None  # "vq=1,mq=0.5"; default: every objective of the data, weight 1
    lora_rank: int = 64
    lora_alpha: float = 128.0
    targets: Sequence[str] = DEFAULT_TARGETS
    beta: float = 1000.0
    beta_schedule: BetaSchedule = "constant"
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
    #: Stop (and write the LoRA) once the training steps used this much CPU time: one compute budget
    #: for methods whose steps cost very different amounts (the online ones sample as they train).
    cpu_budget_s: float | None = None
    snapshot_every: int | None = None  # steps between LoRA snapshots (snapshots/step_NNNNNN/), for curves over training
    options: dict[type[Options], Options] = field(default_factory=dict)

    def __init__(self, **settings: Any) -> None:
        for f in fields(self):
            if f.name != "options":
                setattr(self, f.name, settings.pop(f.name, f.default))
        self.options = {}
        for kind in OPTION_GROUPS:
            names = {f.name for f in fields(kind)}
            self.options[kind] = kind(**{name: settings.pop(name) for name in list(settings) if name in names})
        if settings:
            raise TypeError(f"AlignConfig got unknown settings: {', '.join(settings)}")

    def option(self, kind: type[OptionsT]) -> OptionsT:
        """The run's options of one group."""
        return cast(OptionsT, self.options[kind])

    def settings(self) -> dict[str, Any]:
        """Every setting by its flat name, as JSON values (the report's ``args``; resuming compares them)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        for group in self.options.values():
            flat.update(asdict(group))
        return json.loads(json.dumps(flat))

    def validate(self) -> None:
        """Every rule on the settings, before anything loads: the shared ones, every option group's,
        the composable options' methods, then the run's method's own."""
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"--beta-schedule must be one of {', '.join(BETA_SCHEDULES)}; got {self.beta_schedule!r}")
        checks = [
            ("--lora-rank", self.lora_rank, self.lora_rank >= 1, ">= 1"),
            ("--lora-alpha", self.lora_alpha, self.lora_alpha > 0, "> 0"),
            ("--beta", self.beta, self.beta > 0 and math.isfinite(self.beta), "a positive number"),
            ("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--grad-clip", self.grad_clip, self.grad_clip > 0, "> 0 (inf for none)"),
            ("--batch", self.batch, self.batch >= 1, ">= 1"),
            ("--steps", self.steps, self.steps is None or self.steps >= 1, ">= 1"),
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, ">= 1"),
            ("--eval-every", self.eval_every, self.eval_every is None or self.eval_every >= 1, ">= 1"),
            ("--save-every", self.save_every, self.save_every is None or self.save_every >= 1, ">= 1"),
            ("--cpu-budget", self.cpu_budget_s, self.cpu_budget_s is None or (self.cpu_budget_s > 0 and math.isfinite(self.cpu_budget_s)), "> 0 seconds"),
            ("--snapshot-every", self.snapshot_every, self.snapshot_every is None or self.snapshot_every >= 1, ">= 1"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}; got {value}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= --t-min < --t-max <= 1; got {self.t_min}, {self.t_max}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"--targets must name at least one module, e.g. to_q,to_k,to_v,to_out.0; got {self.targets}")
        for group in self.options.values():
            group.validate()
        method = REGISTRY[self.method]
        for kind, group in self.options.items():
            if kind.switch is not None and getattr(group, kind.switch) is not None and kind not in method.options:
                raise ValueError(f"{flag(kind.switch)} composes with --method {' / '.join(methods_taking(kind))} only "
                                 f"(it modifies the Flow-DPO pair loss); --method {self.method} has no such term")
        method.check(self)
