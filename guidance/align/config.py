"""The settings of an ``nrg align`` run, in a module light enough for the command line to import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from guidance.align.beta_schedule import BETA_SCHEDULES, BetaSchedule

Method = Literal["flow-dpo", "flow-rwr", "diffusion-dro", "sudo", "abc", "spo", "gradspo", "spro", "hybrid"]
METHODS: tuple[str, ...] = ("flow-dpo", "flow-rwr", "diffusion-dro", "sudo", "abc", "spo", "gradspo", "spro", "hybrid")
#: The methods each composable option may be given with (the math needs a Flow-DPO pair margin, and
#: for Diff-UAPA the votes of a preference data set).
COMPOSES: dict[str, tuple[str, ...]] = {
    "--is-clip": ("flow-dpo", "spro", "hybrid"),
    "--teacher": ("flow-dpo", "spro", "hybrid"),
    "--uapa-map-ratio": ("flow-dpo", "hybrid"),
}
#: Methods that sample from the model while training (they need --online-steps and a video shape).
ONLINE_METHODS = ("diffusion-dro", "spo", "gradspo", "spro", "hybrid")
SUDO_TRANSFORMS_DEFAULT = "permute,reverse,shuffle,blur,noise"
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: SPRO's judges (``--judge``): ``reward`` scores with ``--reward-model`` at t = 0; ``demo`` with the
#: frame judge the caller of the trainer passes (``nrg align`` passes the demo world's ground truth).
JUDGES: tuple[str, ...] = ("reward", "demo")
#: Settings that may differ between a run and its resumption (they do not change any step's result).
RESUMABLE_CHANGES = ("steps", "epochs", "eval_every", "save_every", "snapshot_every", "cpu_budget_s")


@dataclass
class AlignConfig:
    """Everything that shapes an alignment run (stored in the report as ``args``)."""

    method: Method = "flow-dpo"
    objectives: str | None = None  # "vq=1,mq=0.5"; default: every objective of the data, weight 1
    lora_rank: int = 64
    lora_alpha: float = 128.0
    targets: Sequence[str] = DEFAULT_TARGETS
    beta: float = 1000.0
    beta_schedule: BetaSchedule = "constant"
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
    #: Stop (and write the LoRA) once the training steps used this much CPU time: one compute budget
    #: for methods whose steps cost very different amounts (the online ones sample as they train).
    cpu_budget_s: float | None = None
    snapshot_every: int | None = None  # steps between LoRA snapshots (snapshots/step_NNNNNN/), for curves over training
    # -- composable with Flow-DPO (COMPOSES) --
    is_clip: float | None = None  # IS-DAA: eps of the clipped importance weight (off when None)
    is_kappa: float | None = None  # IS-DAA: scale of the log-ratio l(x) = -(kappa / 2) D(x); default beta
    teacher: str | None = None  # TVKD: a latent reward model directory, the teacher's value Phi(x_t)
    tvkd_alpha: float = 1.0
    tvkd_gamma: float = 0.9
    uapa_map_ratio: float | None = None  # Diff-UAPA: weight of the Beta-MAP term (off when None)
    # -- online sampling (ONLINE_METHODS) --
    online_steps: int = 20  # sampler steps of every online sample
    online_cfg: float | None = None  # CFG scale of online samples (default: the family's)
    reward_model: str | None = None  # SPO / GradSPO (step-aware scorer), SPRO's judge "reward"
    # -- Diffusion-DRO --
    dro_margin: float = 0.001
    dro_lag: int = 10  # steps between refreshes of the lagging copy that makes the negatives
    # -- SUDO --
    sudo_transforms: str = SUDO_TRANSFORMS_DEFAULT
    sudo_sft: float = 0.5
    sudo_blur: int = 1
    sudo_noise: float = 0.5
    # -- SPO / GradSPO --
    spo_children: int = 4
    spo_beta: float = 10.0
    spo_clip: float = 0.1
    spo_threshold: float = 0.0
    spo_noise: float = 0.7  # the SDE's noise level a (Flow-GRPO)
    gradspo_g: float = 0.5
    gradspo_ema: float = 0.9
    # -- SPRO --
    rounds: int = 2
    spro_samples: int = 4  # K clips per prompt and round
    judge: str = "reward"  # one of JUDGES
    # -- hybrid offline-online --
    hybrid_offline: int = 4  # N offline Flow-DPO steps ...
    hybrid_online: int = 1  # ... then M online recovery steps (0: plain Flow-DPO)
    online_prompts: str | None = None  # a text file, one prompt a line (default: the data's prompts)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"--beta-schedule must be one of {', '.join(BETA_SCHEDULES)}; got {self.beta_schedule!r}")
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
            ("--cpu-budget", self.cpu_budget_s, self.cpu_budget_s is None or (self.cpu_budget_s > 0 and math.isfinite(self.cpu_budget_s)), "> 0 seconds"),
            ("--snapshot-every", self.snapshot_every, self.snapshot_every is None or self.snapshot_every >= 1, ">= 1"),
        ]
        for flag, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{flag} must be {rule}; got {value}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= --t-min < --t-max <= 1; got {self.t_min}, {self.t_max}")
        method_checks = [
            ("--is-clip", self.is_clip, self.is_clip is None or (self.is_clip >= 0 and math.isfinite(self.is_clip)), ">= 0"),
            ("--is-kappa", self.is_kappa, self.is_kappa is None or self.is_kappa > 0, "> 0"),
            ("--tvkd-alpha", self.tvkd_alpha, self.tvkd_alpha >= 0 and math.isfinite(self.tvkd_alpha), ">= 0"),
            ("--tvkd-gamma", self.tvkd_gamma, 0 <= self.tvkd_gamma <= 1, "in [0, 1]"),
            ("--uapa-map-ratio", self.uapa_map_ratio, self.uapa_map_ratio is None or self.uapa_map_ratio >= 0, ">= 0"),
            ("--online-steps", self.online_steps, self.online_steps >= 1, ">= 1"),
            ("--dro-margin", self.dro_margin, self.dro_margin >= 0, ">= 0"),
            ("--dro-lag", self.dro_lag, self.dro_lag >= 1, ">= 1"),
            ("--sudo-sft", self.sudo_sft, 0 <= self.sudo_sft <= 1, "in [0, 1]"),
            ("--sudo-blur", self.sudo_blur, self.sudo_blur >= 1, ">= 1"),
            ("--sudo-noise", self.sudo_noise, self.sudo_noise > 0, "> 0"),
            ("--spo-children", self.spo_children, self.spo_children >= 2, ">= 2"),
            ("--spo-beta", self.spo_beta, self.spo_beta > 0, "> 0"),
            ("--spo-clip", self.spo_clip, 0 < self.spo_clip < 1, "in (0, 1)"),
            ("--spo-threshold", self.spo_threshold, 0 <= self.spo_threshold < 1, "in [0, 1)"),
            ("--spo-noise", self.spo_noise, self.spo_noise > 0, "> 0"),
            ("--gradspo-g", self.gradspo_g, self.gradspo_g >= 0, ">= 0"),
            ("--gradspo-ema", self.gradspo_ema, 0 <= self.gradspo_ema < 1, "in [0, 1)"),
            ("--rounds", self.rounds, self.rounds >= 1, ">= 1"),
            ("--spro-samples", self.spro_samples, self.spro_samples >= 2, ">= 2"),
            ("--hybrid-offline", self.hybrid_offline, self.hybrid_offline >= 1, ">= 1"),
            ("--hybrid-online", self.hybrid_online, self.hybrid_online >= 0, ">= 0"),
        ]
        for flag, value, ok, rule in method_checks:
            if not ok:
                raise ValueError(f"{flag} must be {rule}; got {value}")
        given = {"--is-clip": self.is_clip is not None, "--teacher": self.teacher is not None,
                 "--uapa-map-ratio": self.uapa_map_ratio is not None}
        for flag, on in given.items():
            if on and self.method not in COMPOSES[flag]:
                raise ValueError(f"{flag} composes with --method {' / '.join(COMPOSES[flag])} only (it modifies the "
                                 f"Flow-DPO pair loss); --method {self.method} has no such term")
        if self.is_kappa is not None and self.is_clip is None:
            raise ValueError("--is-kappa needs --is-clip (it scales IS-DAA's log-ratio)")
        if self.teacher is None and (self.tvkd_alpha != 1.0 or self.tvkd_gamma != 0.9):
            raise ValueError("--tvkd-alpha / --tvkd-gamma need --teacher REWARD_DIR (the teacher's value)")
        if self.judge not in JUDGES:
            raise ValueError(f"--judge must be {' or '.join(JUDGES)}; got {self.judge!r}")
        needs_reward = self.method in ("spo", "gradspo") or (self.method == "spro" and self.judge == "reward")
        if needs_reward and self.reward_model is None:
            raise ValueError(f"--method {self.method} needs --reward-model REWARD_DIR (the latent reward model"
                             + (" that judges the samples, or --judge demo)" if self.method == "spro" else
                                " that scores each step's children)"))
        if self.method == "sudo":
            from guidance.align.methods.transforms import parse_transforms

            parse_transforms(self.sudo_transforms)
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"--targets must name at least one module, e.g. to_q,to_k,to_v,to_out.0; got {self.targets}")
