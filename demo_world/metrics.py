"""Ground-truth metrics of the demo world, computed from decoded pixels (no learned model).

All three take a clip ``[F, H, W, 3]`` in [0, 1] (numpy or torch) and, for TA, its prompt. The
formulas (also in docs/demo.md; constants are module-level names below):

Segmentation (shared). ``v = max(R, G, B)`` per pixel. Background level ``b = median(v)`` over the
clip (the object covers < 15% of the pixels); object level ``p = quantile(v, 0.995)``; contrast
``C = p - b``. With ``C < MIN_CONTRAST`` the clip has no object. Otherwise a pixel is foreground when
``v > b + C / 2`` and each frame keeps its largest 4-connected foreground component; a frame shows the
object when that component has at least ``MIN_AREA`` pixels. Soft weights
``w = clip((v - b) / C, 0, 1)`` on the component (dilated by one pixel) give a sub-pixel centroid.

TA (text alignment, in {0, 1/3, 2/3, 1}) = mean of three indicators:
  colour    - every foreground pixel with HSV saturation >= MIN_SATURATION votes for the world colour
              of nearest hue; correct when the prompt's colour gets the most votes;
  shape     - fill = component area / area of its bounding box, median over frames; square when
              fill >= FILL_SQUARE, circle when FILL_TRIANGLE <= fill < FILL_SQUARE, else triangle
              (ideal fills: square 1, circle pi/4 = 0.785, triangle 1/2);
  direction - displacement d = (F - 1) * least-squares slope of the centroid track; the direction
              is the world direction u maximising d . u, correct when it is the prompt's and
              |d| >= MIN_TRAVEL pixels.

MQ (motion quality, in [0, 1]) = P * M * S * K:
  P = fraction of frames showing the object (0 overall when fewer than 3 do),
  M = min(1, |d| / FULL_TRAVEL)                      (it moves; the slowest world motion is ~8.8 px),
  S = exp(-J / JERK_SCALE), J = RMS over frames of |c[f+1] - 2 c[f] + c[f-1]| (px / frame^2),
  K = exp(-CV(area) / AREA_CV_SCALE)                 (keeps its size: CV = std / mean over the frames
      showing the object of the soft area sum(w)).
  The two scales are referenced to what the demo model's VAE can show: the median VAE round trip of
  a rendered clip (encode, decode) keeps about 90% of S and of K (its J is ~0.15 px / frame^2, its
  CV ~0.023; ``python -m benchmarks.demo_round_trip``). Version 1 of the metrics had JERK_SCALE = 0.5,
  of which the median round trip kept only 73%, and which squeezed the model's samples into MQ ~0.06,
  against a 0.05 tie margin (METRICS_VERSION).

VQ (visual quality, in [0, 1]) = E * Q:
  E = min(1, R / SHARP_REF), R = sum g^2 / (C * sum g) over the object's bounding box grown by
      BOX_MARGIN pixels, g = |grad v| (forward differences), averaged over frames showing the object.
      R is ~1 / (edge width in pixels): a step edge gives ~1, a blur of width k gives ~1/k.
      SHARP_REF = 0.31 is the median R of a rendered clip's VAE round trip (the demo VAEs decode
      edges about three pixels wide: v1's round trip 0.335, v2's 0.309, against 0.665 for the
      rendered clips themselves), so a sample as sharp as its VAE can show scores E = 1 (version 3;
      versions 1 and 2 had 0.65, the rendered clips' own median, which capped VQ near 0.5 for any
      model); E = 0 without object.
  Q = exp(-sigma / NOISE_SCALE), sigma = mean over frames of the per-channel standard deviation of
      the pixels outside the grown boxes (a clean background is flat: sigma = 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from demo_world.world import COLORS, DIRECTIONS, Prompt, parse_prompt

MIN_CONTRAST = 0.25
MIN_AREA = 12
MIN_SATURATION = 0.25
FILL_SQUARE = 0.89
FILL_TRIANGLE = 0.64
MIN_TRAVEL = 4.0
FULL_TRAVEL = 8.0
JERK_SCALE = 1.5
AREA_CV_SCALE = 0.25
SHARP_REF = 0.31
BOX_MARGIN = 3
NOISE_SCALE = 0.03

OBJECTIVES = ("vq", "mq", "ta")
#: 2 since 2026-12-01: JERK_SCALE 0.5 -> 1.5; 3 since 2026-12-05: SHARP_REF 0.65 -> 0.31 (see the module
#: docstring). Reports record it, so figures measured with one version (docs/demo.md says which) are never
#: compared with another's.
METRICS_VERSION = 3


@dataclass
class ClipReport:
    """Every measured quantity of one clip (``vq``, ``mq``, ``ta`` are the metrics)."""

    vq: float
    mq: float
    ta: float
    color: str | None
    shape: str | None
    direction: str | None
    color_ok: bool
    shape_ok: bool
    direction_ok: bool
    presence: float
    travel: float
    jerk: float
    area_cv: float
    sharpness: float
    background_sigma: float
    fill: float

    def as_dict(self) -> dict:
        return asdict(self)


def _as_array(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().float().numpy()
    arr = np.asarray(frames, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3]; got {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def _largest_components(mask: np.ndarray) -> np.ndarray:
    """Per frame, the largest 4-connected component of a boolean mask [F, H, W]."""
    frames, height, width = mask.shape
    labels = np.where(mask, np.arange(1, mask.size + 1, dtype=np.int64).reshape(mask.shape), 0)
    while True:  # propagate the max label through each component until nothing changes
        grown = labels.copy()
        grown[:, 1:, :] = np.maximum(grown[:, 1:, :], labels[:, :-1, :])
        grown[:, :-1, :] = np.maximum(grown[:, :-1, :], labels[:, 1:, :])
        grown[:, :, 1:] = np.maximum(grown[:, :, 1:], labels[:, :, :-1])
        grown[:, :, :-1] = np.maximum(grown[:, :, :-1], labels[:, :, 1:])
        grown = np.where(mask, grown, 0)
        if np.array_equal(grown, labels):
            break
        labels = grown
    out = np.zeros_like(mask)
    for f in range(frames):
        ids, counts = np.unique(labels[f][labels[f] > 0], return_counts=True)
        if len(ids):
            out[f] = labels[f] == ids[np.argmax(counts)]
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def _hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue in degrees [0, 360) and saturation of rgb [..., 3]."""
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1.0), 0.0)
    return hue % 360.0, sat


_COLOR_NAMES = tuple(COLORS)
_COLOR_HUES = _hue_saturation(np.asarray([COLORS[c] for c in _COLOR_NAMES]))[0]


def _classify_hues(hue: np.ndarray) -> np.ndarray:
    diff = np.abs(hue[..., None] - _COLOR_HUES)
    return np.argmin(np.minimum(diff, 360.0 - diff), axis=-1)


def _empty(prompt: Prompt | None, sigma: float) -> ClipReport:
    return ClipReport(0.0, 0.0, 0.0, None, None, None, False, False, False, 0.0, 0.0, float("inf"),
                      float("inf"), 0.0, sigma, 0.0)


def _segment(v: np.ndarray) -> tuple[float, float, np.ndarray | None]:
    """Background level, contrast and the object's pixels per frame of the value channel ``v``
    [F, H, W]; no pixels (None) when the contrast is too low for the clip to show an object."""
    b = float(np.median(v))
    contrast = float(np.quantile(v, 0.995)) - b
    if contrast < MIN_CONTRAST:
        return b, contrast, None
    return b, contrast, _largest_components(v > b + contrast / 2)


def object_mask(frames) -> np.ndarray:
    """Boolean [F, H, W]: the object's pixels as the metrics segment them, grown by one pixel to take
    in its edge; all False when the clip shows no object."""
    clip = _as_array(frames)
    comp = _segment(clip.max(-1))[2]
    return np.zeros(clip.shape[:3], dtype=bool) if comp is None else _dilate(comp)


def evaluate_clip(frames, prompt: str | Prompt | None = None) -> ClipReport:
    """All three metrics of one clip (TA needs the prompt; without it TA is 0)."""
    clip = _as_array(frames)
    target = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    n_frames, height, width, _ = clip.shape
    v = clip.max(-1)
    b, contrast, comp = _segment(v)
    if comp is None:
        return _empty(target, float(clip.std(axis=(1, 2)).mean()))
    areas = comp.sum(axis=(1, 2)).astype(np.float64)
    present = areas >= MIN_AREA
    weights = np.clip((v - b) / contrast, 0.0, 1.0) * _dilate(comp)

    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    centroids, fills, sharp, sigmas = [], [], [], []
    background = np.ones((n_frames, height, width), dtype=bool)
    gx = np.zeros_like(v)
    gy = np.zeros_like(v)
    gx[:, :, :-1] = v[:, :, 1:] - v[:, :, :-1]
    gy[:, :-1, :] = v[:, 1:, :] - v[:, :-1, :]
    grad = np.hypot(gx, gy)
    for f in np.flatnonzero(present):
        w = weights[f]
        total = w.sum()
        centroids.append(((w * xs).sum() / total, (w * ys).sum() / total))
        rows, cols = np.flatnonzero(comp[f].any(1)), np.flatnonzero(comp[f].any(0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        fills.append(areas[f] / ((r1 - r0) * (c1 - c0)))
        r0, c0 = max(r0 - BOX_MARGIN, 0), max(c0 - BOX_MARGIN, 0)
        r1, c1 = min(r1 + BOX_MARGIN, height), min(c1 + BOX_MARGIN, width)
        g = grad[f, r0:r1, c0:c1]
        sharp.append(float((g**2).sum() / (contrast * max(g.sum(), 1e-12))))
        background[f, r0:r1, c0:c1] = False
    for f in range(n_frames):
        if background[f].sum() > 16:
            sigmas.append(float(clip[f][background[f]].std(axis=0).mean()))
    sigma = float(np.mean(sigmas)) if sigmas else 0.0
    clean = float(np.exp(-sigma / NOISE_SCALE))

    if present.sum() < 3:
        return _empty(target, sigma)
    presence = float(present.mean())
    c = np.asarray(centroids)
    idx = np.flatnonzero(present).astype(np.float64)
    slope = np.polyfit(idx, c, 1)[0]  # [dx/df, dy/df]
    d = slope * (n_frames - 1)
    travel = float(np.hypot(*d))
    # Acceleration on consecutive present frames only.
    acc = [c[i + 1] - 2 * c[i] + c[i - 1] for i in range(1, len(c) - 1)
           if idx[i + 1] - idx[i] == 1 and idx[i] - idx[i - 1] == 1]
    jerk = float(np.sqrt(np.mean([a @ a for a in acc]))) if acc else float("inf")
    soft_area = weights[present].sum(axis=(1, 2))
    area_cv = float(soft_area.std() / soft_area.mean())
    mq = presence * min(1.0, travel / FULL_TRAVEL) * float(np.exp(-jerk / JERK_SCALE)) * float(
        np.exp(-area_cv / AREA_CV_SCALE))

    sharpness = float(np.mean(sharp))
    vq = min(1.0, sharpness / SHARP_REF) * clean

    fill = float(np.median(fills))
    shape = "square" if fill >= FILL_SQUARE else "circle" if fill >= FILL_TRIANGLE else "triangle"
    names = list(DIRECTIONS)
    direction = names[int(np.argmax([d @ np.asarray(DIRECTIONS[n]) for n in names]))] if travel >= MIN_TRAVEL else None
    fg = clip[comp & present[:, None, None]]
    hue, sat = _hue_saturation(fg)
    votes = np.bincount(_classify_hues(hue[sat >= MIN_SATURATION]), minlength=len(_COLOR_NAMES))
    color = _COLOR_NAMES[int(np.argmax(votes))] if votes.sum() else None

    ok = (False, False, False)
    if target is not None:
        ok = (color == target.color, shape == target.shape, direction == target.direction)
    return ClipReport(
        vq=float(vq), mq=float(mq), ta=sum(ok) / 3.0, color=color, shape=shape, direction=direction,
        color_ok=ok[0], shape_ok=ok[1], direction_ok=ok[2], presence=presence, travel=travel, jerk=jerk,
        area_cv=area_cv, sharpness=sharpness, background_sigma=sigma, fill=fill,
    )


def evaluate(frames, prompt: str | Prompt | None = None) -> dict[str, float]:
    """``{"vq": ..., "mq": ..., "ta": ...}`` of one clip."""
    report = evaluate_clip(frames, prompt)
    return {"vq": report.vq, "mq": report.mq, "ta": report.ta}
