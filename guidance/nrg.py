"""Flow-NRG: the per-request guidance settings, their defaults, validation and step coefficients.

Three modes turn a reward gradient into a prediction offset (docs/guidance.md has the equations):

* ``relative`` (the default): per objective, ``strength * w_k * RMS(v_c - v_u) * g_k / RMS(g_k)``.
  The push is sized against the classifier-free guidance term of the same sample and step
  (FreeDoM-style), so it is constant in t and independent of the reward's scale: ``strength`` 3
  means "three CFG terms' worth" on any reward model. Without CFG the reference is RMS(v_c).
* ``sum``: the paper's rule, ``strength * min(t / (1 - t), max_ratio) * grad(sum_k w_k r_k)``. Its
  push grows without bound towards t = 1 (hence the cap ``max_ratio``, default 10, reached at
  t = 10/11 ~ 0.91) and its useful strength depends on the scale of the reward's gradient.
* ``unit``: the paper's schedule with each objective's gradient rescaled to unit L2 norm.

Two gradient-free modes use the same reward as a verifier instead (``guidance.search``): each runs
``particles`` copies of the request from different noise and keeps the best, so they work even where
the reward's gradient points nowhere useful:

* ``best_of_n``: score the particles once, at the middle of the window, continue the best one.
* ``fk``: Feynman-Kac steering: at every step inside the window, weight the particles
  by exp(strength * (r_t - r_previous)) and resample them when the effective sample size falls below
  half; return the particle with the best final reward.

Every mode is skipped outright at t = 1 and outside the request's window. The default window
[0.2, 0.8] keeps guidance off the noisiest steps, where a latent reward model is least accurate
(pair accuracy near chance) and easiest to game, and off the last steps, where there is little
left to steer. A reward model may carry its own recommended defaults (``GuidanceDefaults``, stored
in its ``reward_config.json`` by ``nrg eval --tune``); a request that gives only weights gets those.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["relative", "sum", "unit", "best_of_n", "fk"]
#: Modes that push along the reward's gradient; the kernel combines them (``kernels.guided_step``).
GRADIENT_MODES: tuple[str, ...] = ("relative", "sum", "unit")
#: Modes that select among particles by the reward, with no gradient (``guidance.search``).
SEARCH_MODES: tuple[str, ...] = ("best_of_n", "fk")
MODES: tuple[str, ...] = GRADIENT_MODES + SEARCH_MODES
#: Modes that scale the gradient by the paper's t / (1 - t) schedule.
PAPER_MODES: tuple[str, ...] = ("sum", "unit")
#: Default bound on t / (1 - t): see the module docstring.
DEFAULT_MAX_RATIO = 10.0
#: The default strength of mode ``relative``: the push is this many CFG terms (RMS) per objective.
DEFAULT_STRENGTH = 3.0
#: The paper's w, the default strength of the paper's modes when nothing better is known.
PAPER_STRENGTH = 100.0
#: Noise levels where guidance applies by default: see the module docstring.
DEFAULT_WINDOW = (0.2, 0.8)
#: Particles of the search modes by default, and at most (each costs a denoiser pass per step).
DEFAULT_PARTICLES = 4
MAX_PARTICLES = 16
#: Feynman-Kac's potential scale lambda (particles are weighted by exp(lambda * reward gain)), the
#: default strength of mode ``fk``.
FK_STRENGTH = 10.0


@dataclass(frozen=True)
class GuidanceSpec:
    """One request's reward guidance.

    ``weights`` maps objective names (from the reward model's metadata) to lambda_k; they need not
    sum to 1 and may be negative (to push an objective down). ``window`` is the closed range of noise
    levels t in [0, 1] (1 = pure noise) where guidance is applied. ``mode`` is one of ``MODES`` (see
    the module docstring): ``"relative"`` normalises each objective's gradient and sizes the push
    against the CFG term; ``"sum"`` is the paper's single backward pass of sum_k lambda_k r_k on the
    t / (1 - t) schedule; ``"unit"`` is that schedule with unit-norm gradients per objective.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    strength: float = DEFAULT_STRENGTH
    window: tuple[float, float] = DEFAULT_WINDOW
    mode: Mode = "relative"
    #: Copies of the request run in the search modes (ignored by the gradient modes).
    particles: int = DEFAULT_PARTICLES

    @property
    def search(self) -> bool:
        """Whether this spec selects among particles (an active search mode) instead of pushing."""
        return self.active and self.mode in SEARCH_MODES

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
        if self.mode in SEARCH_MODES and (
            isinstance(self.particles, bool) or not isinstance(self.particles, int)
            or not 2 <= self.particles <= MAX_PARTICLES
        ):
            raise ValueError(f"particles must be an integer from 2 to {MAX_PARTICLES} in mode {self.mode}; "
                             f"got {self.particles!r}")

    @property
    def active(self) -> bool:
        """Whether this spec can change anything: a positive strength and some nonzero weight."""
        return self.strength != 0 and any(v != 0 for v in self.weights.values())

    def weight_vector(self, objectives: Sequence[str]) -> list[float]:
        return [float(self.weights.get(name, 0.0)) for name in objectives]


@dataclass(frozen=True)
class GuidanceDefaults:
    """What a request gets for the settings it leaves out; a reward model may carry its own.

    ``strength`` and ``window`` belong to ``mode``: a request that picks another mode gets that mode's
    built-in strength (``DEFAULT_STRENGTH`` for ``relative``, the paper's ``PAPER_STRENGTH`` otherwise)
    and this window. ``source`` says where the values come from (e.g. the ``nrg eval --tune`` run).
    """

    mode: Mode = "relative"
    strength: float = DEFAULT_STRENGTH
    window: tuple[float, float] = DEFAULT_WINDOW
    source: str = "built-in"

    def complete(
        self,
        weights: Mapping[str, float],
        strength: float | None = None,
        window: Sequence[float] | None = None,
        mode: str | None = None,
        particles: int | None = None,
    ) -> GuidanceSpec:
        """A full spec from what a request gave; the rest from these defaults."""
        mode = mode or self.mode
        if strength is None:
            strength = self.strength if mode == self.mode else builtin_strength(mode)
        return GuidanceSpec(
            dict(weights), float(strength), tuple(window or self.window), mode,  # type: ignore[arg-type]
            DEFAULT_PARTICLES if particles is None else particles,
        )

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "strength": self.strength, "window": list(self.window), "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> GuidanceDefaults:
        """Parse ``reward_config.json``'s ``guidance_defaults``, validated like a request."""
        try:
            defaults = cls(data["mode"], float(data["strength"]), tuple(float(v) for v in data["window"]),
                           str(data.get("source", where)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{where}: guidance_defaults needs mode, strength and window [t_lo, t_hi]; {exc}"
            ) from None
        try:
            GuidanceSpec({}, defaults.strength, defaults.window, defaults.mode).validate(())
        except ValueError as exc:
            raise ValueError(f"{where}: guidance_defaults.{exc}") from None
        return defaults


def check_gradient_objectives(spec: GuidanceSpec, differentiable: Collection[str]) -> None:
    """Refuse a gradient mode that weights an objective without a useful gradient (``ValueError``
    naming ``weights``, the objectives and the differentiable ones).

    A gradient mode pushes along the gradient of every weighted objective, so each must have one: a
    judge's non-differentiable objectives (quantised frames, optical flow) would push along zero or
    noise. The search modes only rank, so any objective serves them; so does a zero weight.
    """
    if not spec.active or spec.mode not in GRADIENT_MODES:
        return
    without = [name for name, weight in spec.weights.items() if weight != 0 and name not in differentiable]
    if without:
        raise ValueError(
            f"weights: {', '.join(without)} {'has' if len(without) == 1 else 'have'} no gradient, so mode "
            f"{spec.mode} cannot push along {'it' if len(without) == 1 else 'them'}; weight only differentiable "
            f"objectives ({', '.join(sorted(differentiable)) or 'none'}) or rank with {' / '.join(SEARCH_MODES)}"
        )


#: The defaults of a reward model that carries none (and of analytic rewards).
BUILTIN_DEFAULTS = GuidanceDefaults()


def builtin_strength(mode: str) -> float:
    """relative: 3 CFG terms; the paper's modes: its w = 100; fk: lambda = 10; best_of_n: unused (1)."""
    return {"relative": DEFAULT_STRENGTH, "fk": FK_STRENGTH, "best_of_n": 1.0}.get(mode, PAPER_STRENGTH)


def defaults_for(reward: object | None) -> GuidanceDefaults:
    """The recommended defaults of ``reward`` (its ``guidance_defaults`` attribute), else the built-in ones."""
    defaults = getattr(reward, "guidance_defaults", None)
    return defaults if isinstance(defaults, GuidanceDefaults) else BUILTIN_DEFAULTS


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
    """Per-sample coef inside the sample's window, else 0: ``strength`` in mode ``relative`` (the
    kernel sizes the push), ``strength * min(ratio, max_ratio)`` in the paper's modes, 0 in the
    search modes (they take no gradient step).

    Plain floats, so the sampler decides on the host, with no device sync, whether any sample needs
    a reward gradient at this step. Exactly 0 at t >= 1, outside a window, and for inactive specs, so those
    samples get the unguided prediction bit for bit.
    """
    bounded = min(ratio, max_ratio)
    coefs = []
    for spec in specs:
        inside = spec is not None and spec.active and spec.window[0] <= noise_level <= spec.window[1]
        if not inside or noise_level >= 1.0 or spec.mode in SEARCH_MODES:
            coefs.append(0.0)
        else:
            coefs.append(spec.strength * (bounded if spec.mode in PAPER_MODES else 1.0))
    return coefs
