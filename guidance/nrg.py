"""Flow-NRG: the per-request guidance settings, their validation, and the guidance coefficient.

The guided prediction of every family has one shape (REFERENCE §2.1, §2.5):

    pred~ = pred_cfg - coef * G,   coef = strength * min(ratio(t), max_ratio)

with ``G`` the gradient of the request's weighted reward with respect to the noisy latents and
``ratio`` the family's factor (``t / (1 - t)`` for flow matching). ``ratio`` grows without bound as
t -> 1, so it is capped at ``max_ratio`` (default 10, reached at t = 10/11 ~ 0.91) and guidance is
skipped outright at t = 1, as in the paper. The cap keeps the first, almost pure-noise steps from
receiving a gradient step hundreds of times larger than the rest of the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["sum", "unit"]
MODES: tuple[str, ...] = ("sum", "unit")
#: Default bound on t / (1 - t): see the module docstring.
DEFAULT_MAX_RATIO = 10.0
#: The paper's guidance strength w.
DEFAULT_STRENGTH = 100.0


@dataclass(frozen=True)
class GuidanceSpec:
    """One request's reward guidance.

    ``weights`` maps objective names (from the reward model's metadata) to lambda_k; they need not
    sum to 1 and may be negative (to push an objective down). ``window`` is the closed range of noise
    levels t in [0, 1] (1 = pure noise) where guidance is applied. ``mode`` combines objectives:
    ``"sum"`` is the paper's single backward pass of sum_k lambda_k r_k; ``"unit"`` rescales each
    objective's gradient to unit L2 norm per sample before weighting, so that an objective whose
    reward happens to have a steep gradient cannot drown the others (weights then set the mix of
    directions, strength the step size).
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    strength: float = DEFAULT_STRENGTH
    window: tuple[float, float] = (0.0, 1.0)
    mode: Mode = "sum"

    def validate(self, objectives: Sequence[str]) -> None:
        """Raise ``ValueError`` naming the field and the limit for any bad value."""
        for name, value in self.weights.items():
            if name not in objectives:
                raise ValueError(
                    f"weights: unknown objective {name!r}; this reward model has {', '.join(objectives)}"
                )
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"weights.{name} must be a finite number; got {value!r}")
        if not isinstance(self.strength, (int, float)) or not math.isfinite(self.strength) or self.strength < 0:
            raise ValueError(f"strength must be a finite number >= 0; got {self.strength!r}")
        if len(self.window) != 2:
            raise ValueError(f"window must be [t_lo, t_hi]; got {self.window!r}")
        lo, hi = self.window
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) or not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"window must satisfy 0 <= t_lo <= t_hi <= 1; got {self.window!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")

    @property
    def active(self) -> bool:
        """Whether this spec can change anything: a positive strength and some nonzero weight."""
        return self.strength != 0 and any(v != 0 for v in self.weights.values())

    def weight_vector(self, objectives: Sequence[str]) -> list[float]:
        return [float(self.weights.get(name, 0.0)) for name in objectives]


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``"vq=1,mq=0.5"`` (the CLI form) into a mapping, with errors that quote the input."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"weights: expected name=value, got {item!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weights: {name.strip()} has a non-numeric value {value!r}") from None
    return weights


def guidance_coefficients(
    specs: Sequence[GuidanceSpec | None],
    noise_level: float,
    ratio: float,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> list[float]:
    """Per-sample coef = strength * min(ratio, max_ratio) inside the sample's window, else 0.

    Plain floats, so the sampler decides on the host, with no device sync, whether any sample needs
    a reward gradient at this step. Exactly 0 at t >= 1, outside a window, and for inactive specs, so those
    samples get the unguided prediction bit for bit.
    """
    bounded = min(ratio, max_ratio)
    coefs = []
    for spec in specs:
        inside = spec is not None and spec.active and spec.window[0] <= noise_level <= spec.window[1]
        coefs.append(spec.strength * bounded if inside and noise_level < 1.0 else 0.0)
    return coefs
