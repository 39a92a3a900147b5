"""The synthetic demo world: one coloured shape moving over a dark background.

A clip is float32 ``[F, H, W, 3]`` in [0, 1] (the pipeline's output layout), 64x64 pixels and 17
frames by default. Its prompt is ``"a {color} {shape} moving {direction}"`` with an optional speed word
appended (``"... moving left slowly"``). Everything else (start position, size, exact speed,
background level) is drawn from a ``numpy`` generator seeded by the clip's seed, so
``render(prompt, seed)`` is a pure function.

Shapes are drawn from their signed distance with a one-pixel anti-aliased edge, so a rendered clip is
the crispest a 64x64 clip of that shape can be. The object always stays fully inside the frame.

Training footage varies in quality as real data does (``Quality``, drawn per clip by ``draw_quality``):
softer edges, a textured background, a shaky path, a size that wobbles; each axis is perfect in half
the clips. It teaches a model a spread of sharpness, noise and smoothness rather than one level, so
that guidance has room on every metric. ``render`` stays the perfect clip (the metrics' reference).

Evaluation split (fixed): the 8 ``(color, shape, direction)`` combinations of ``HELD_OUT_COMBOS`` are
never used for training (each colour, shape and direction appears in them, never the whole triple
seen in training), and evaluation seeds start at ``EVAL_SEED_BASE`` (training seeds are below it).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.16, 0.14),
    "green": (0.16, 0.85, 0.22),
    "blue": (0.20, 0.36, 0.98),
    "yellow": (0.95, 0.88, 0.15),
}
SHAPES = ("circle", "square", "triangle")
#: direction -> unit vector (dx, dy) in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: speed word -> range of speeds in pixels per frame ("" = no speed word).
SPEEDS: dict[str, tuple[float, float]] = {"slowly": (0.55, 0.85), "": (1.0, 1.5), "quickly": (1.8, 2.3)}
HEIGHT = WIDTH = 64
FRAMES = 17
#: Half-extent of the object in pixels (radius of the circle, half side of the square).
SIZE_RANGE = (6.0, 9.5)
BACKGROUND_RANGE = (0.03, 0.09)

#: Held out of training, used by ``nrg eval`` and the reward model's test split.
HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("red", "square", "up"),
    ("red", "triangle", "right"),
    ("green", "circle", "down"),
    ("green", "triangle", "left"),
    ("blue", "circle", "right"),
    ("blue", "square", "left"),
    ("yellow", "triangle", "up"),
    ("yellow", "circle", "down"),
)
#: Evaluation seeds are EVAL_SEED_BASE + i; training draws seeds below it.
EVAL_SEED_BASE = 1_000_000

_PROMPT = re.compile(
    r"^a (?P<color>red|green|blue|yellow) (?P<shape>circle|square|triangle) moving "
    r"(?P<direction>left|right|up|down)(?: (?P<speed>slowly|quickly))?$"
)


@dataclass(frozen=True)
class Prompt:
    color: str
    shape: str
    direction: str
    speed: str = ""  # "", "slowly" or "quickly"

    @property
    def text(self) -> str:
        base = f"a {self.color} {self.shape} moving {self.direction}"
        return f"{base} {self.speed}" if self.speed else base

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.direction)

    @property
    def held_out(self) -> bool:
        return self.combo in HELD_OUT_COMBOS


def parse_prompt(text: str) -> Prompt:
    """Parse a prompt of the world's grammar; ``ValueError`` for anything else."""
    match = _PROMPT.match(text.strip())
    if not match:
        raise ValueError(
            f"not a demo-world prompt: {text!r}; expected 'a {{color}} {{shape}} moving {{direction}} [slowly|quickly]'"
        )
    return Prompt(match["color"], match["shape"], match["direction"], match["speed"] or "")


def all_prompts() -> list[Prompt]:
    """Every prompt of the grammar (4 colours x 3 shapes x 4 directions x 3 speeds = 144), in a fixed order."""
    return [Prompt(c, s, d, v) for c, s, d, v in itertools.product(COLORS, SHAPES, DIRECTIONS, SPEEDS)]


def train_prompts() -> list[Prompt]:
    return [p for p in all_prompts() if not p.held_out]


def eval_prompts() -> list[Prompt]:
    """The held-out prompts without a speed word, one per held-out combination (8)."""
    return [Prompt(c, s, d) for c, s, d in HELD_OUT_COMBOS]


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of a shape centred at the origin."""
    if shape == "circle":
        return np.hypot(x, y) - size
    if shape == "square":
        qx, qy = np.abs(x) - size, np.abs(y) - size
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":
        # Upward isosceles triangle filling its 2size x 2size box: apex (0, -size), base y = +size.
        # Edges as half-planes; max of their signed distances (exact inside, a fine bound outside).
        right = (2.0 * np.abs(x) - (y + size)) / np.sqrt(5.0)
        bottom = y - size
        return np.maximum(right, bottom)
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Quality:
    """How a training clip falls short of the perfect render, one field per axis a metric reads."""

    #: Width of the anti-aliased edge in pixels (1: the crisp render; VQ's sharpness reads ~1 / width).
    edge_width: float = 1.0
    #: Standard deviation of a smooth grey texture on the background (VQ's background noise).
    texture: float = 0.0
    #: Standard deviation in pixels of the object's position error, new each frame (MQ's jerk).
    shake: float = 0.0
    #: Relative standard deviation of the object's size, new each frame (MQ's size constancy).
    wobble: float = 0.0


PERFECT = Quality()
#: Each axis is perfect with this probability, else drawn uniformly from its range.
PERFECT_SHARE = 0.5
QUALITY_RANGES: dict[str, tuple[float, float]] = {
    "edge_width": (1.6, 3.5), "texture": (0.01, 0.05), "shake": (0.3, 1.2), "wobble": (0.03, 0.10),
}
#: The background texture is drawn on a coarse grid and smoothly upsampled (a VAE with 4x spatial
#: compression can carry it; pixel-level noise it could not).
TEXTURE_CELL = 4


def draw_quality(seed: int) -> Quality:
    """The quality of training clip ``seed``: every axis independently perfect or degraded."""
    rng = np.random.default_rng([int(seed), 0x0A11])
    values = {}
    for name, (lo, hi) in QUALITY_RANGES.items():
        degraded, level = rng.random() >= PERFECT_SHARE, float(rng.uniform(lo, hi))
        values[name] = level if degraded else getattr(PERFECT, name)
    return Quality(**values)


@dataclass(frozen=True)
class ClipParams:
    """The hidden variables of one clip."""

    prompt: Prompt
    size: float
    speed: float
    start: tuple[float, float]  # centre (x, y) at frame 0
    background: float

    def centre(self, frame: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.prompt.direction]
        return self.start[0] + dx * self.speed * frame, self.start[1] + dy * self.speed * frame


def clip_params(prompt: Prompt | str, seed: int, frames: int = FRAMES, height: int = HEIGHT,
                width: int = WIDTH) -> ClipParams:
    """Draw a clip's hidden variables from ``seed`` (deterministic)."""
    p = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    rng = np.random.default_rng([int(seed), 0x5EED])
    size = float(rng.uniform(*SIZE_RANGE))
    speed = float(rng.uniform(*SPEEDS[p.speed]))
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[p.direction]
    margin = size + 1.5
    starts = []
    for d, extent in ((dx, width), (dy, height)):
        lo, hi = margin, extent - margin
        if d > 0:
            hi -= travel
        elif d < 0:
            lo += travel
        if hi < lo:  # too fast for the frame: centre the path
            lo = hi = (lo + hi) / 2
        starts.append(float(rng.uniform(lo, hi)))
    background = float(rng.uniform(*BACKGROUND_RANGE))
    return ClipParams(p, size, speed, (starts[0], starts[1]), background)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Zero-mean, unit-std smooth texture [H, W]: Gaussian cells bilinearly upsampled."""
    cells = rng.standard_normal((height // TEXTURE_CELL + 2, width // TEXTURE_CELL + 2))
    ys = (np.arange(height) + 0.5) / TEXTURE_CELL + 0.5
    xs = (np.arange(width) + 0.5) / TEXTURE_CELL + 0.5
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = cells[y0][:, x0] * (1 - fx) + cells[y0][:, x0 + 1] * fx
    bottom = cells[y0 + 1][:, x0] * (1 - fx) + cells[y0 + 1][:, x0 + 1] * fx
    texture = top * (1 - fy) + bottom * fy
    return (texture - texture.mean()) / texture.std()


def render_params(params: ClipParams, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH,
                  quality: Quality = PERFECT, seed: int = 0) -> np.ndarray:
    """Render ``params``; a ``quality`` other than ``PERFECT`` degrades it with draws from ``seed``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    color = np.asarray(COLORS[params.prompt.color])
    rng = np.random.default_rng([int(seed), 0xB1A5])
    shake = rng.standard_normal((frames, 2)) * quality.shake
    scale = np.clip(1.0 + rng.standard_normal(frames) * quality.wobble, 0.7, 1.3)
    background = np.full((height, width), params.background)
    if quality.texture:
        background = np.clip(background + quality.texture * _texture(rng, height, width), 0.0, 1.0)
    out = np.empty((frames, height, width, 3), dtype=np.float32)
    for f in range(frames):
        cx, cy = params.centre(f)
        sdf = _sdf(params.prompt.shape, xs - cx - shake[f, 0], ys - cy - shake[f, 1], params.size * scale[f])
        alpha = np.clip(0.5 - sdf / quality.edge_width, 0.0, 1.0)[..., None]
        out[f] = background[..., None] * (1 - alpha) + color * alpha
    return out


def render(prompt: Prompt | str, seed: int, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The clip of ``prompt`` for ``seed``: float32 [F, H, W, 3] in [0, 1]."""
    return render_params(clip_params(prompt, seed, frames, height, width), frames, height, width)


def render_training(prompt: Prompt | str, seed: int, frames: int = FRAMES, height: int = HEIGHT,
                    width: int = WIDTH) -> np.ndarray:
    """Training clip ``seed`` of ``prompt``: the render at the quality ``draw_quality(seed)``."""
    params = clip_params(prompt, seed, frames, height, width)
    return render_params(params, frames, height, width, draw_quality(seed), seed)


def sample_training_prompt(rng: np.random.Generator) -> Prompt:
    """A uniformly drawn training prompt (never a held-out combination)."""
    prompts = train_prompts()
    return prompts[int(rng.integers(len(prompts)))]
