"""Pictures of an evaluation: a contact sheet of clips and a plot of the win rates.

The contact sheet puts, for a few (prompt, seed) pairs, the unguided clip beside the clip of every
guided setting from the same noise, so that what guidance does is seen, not only counted. The
trade-off plot shows each setting's win rate on each objective with its 95% interval: weights
should move the objectives they weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Frames of a clip shown in one cell (first, middle, last), and the pixel scale of the sheet.
CELL_FRAMES = 3
SCALE = 2
LABEL_HEIGHT = 14
GAP = 6


def _cell(frames: np.ndarray) -> np.ndarray:
    """``CELL_FRAMES`` frames of a clip [F, H, W, 3] in [0, 1], side by side, as uint8."""
    index = np.linspace(0, len(frames) - 1, CELL_FRAMES).round().astype(int)
    strip = np.concatenate([frames[i] for i in index], axis=1)
    strip = np.clip(strip * 255 + 0.5, 0, 255).astype(np.uint8)
    return strip.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def contact_sheet(
    columns: Sequence[str], rows: Sequence[str], clips: Sequence[Sequence[np.ndarray]], path: str | Path
) -> Path:
    """Write a PNG grid: ``clips[r][c]`` ([F, H, W, 3] in [0, 1]) under column ``c``'s and row ``r``'s labels."""
    if not clips or any(len(row) != len(columns) for row in clips) or len(clips) != len(rows):
        raise ValueError("contact_sheet needs one clip per (row, column)")
    cell_h, cell_w, _ = _cell(clips[0][0]).shape
    width = len(columns) * (cell_w + GAP) + GAP
    height = LABEL_HEIGHT + len(rows) * (cell_h + LABEL_HEIGHT + GAP) + GAP
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((GAP + c * (cell_w + GAP), 2), name, fill=(0, 0, 0))
    for r, (label, row) in enumerate(zip(rows, clips)):
        top = LABEL_HEIGHT + r * (cell_h + LABEL_HEIGHT + GAP)
        draw.text((GAP, top + 1), label, fill=(60, 60, 60))
        for c, frames in enumerate(row):
            sheet.paste(Image.fromarray(_cell(np.asarray(frames))), (GAP + c * (cell_w + GAP), top + LABEL_HEIGHT))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def tradeoff_plot(report: dict, path: str | Path) -> Path:
    """Grouped bars: per evaluated row, the win rate on each objective with its 95% Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = report["objectives"]
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 3.6), dpi=120)
    width = 0.8 / len(objectives)
    for k, name in enumerate(objectives):
        xs, rates, lower, upper = [], [], [], []
        for i, row in enumerate(rows):
            stats = row["stats"][name]
            if stats["rate"] is None:
                continue
            xs.append(i + (k - (len(objectives) - 1) / 2) * width)
            rates.append(100 * stats["rate"])
            lower.append(100 * (stats["rate"] - stats["ci95"][0]))
            upper.append(100 * (stats["ci95"][1] - stats["rate"]))
        ax.bar(xs, rates, width, yerr=[lower, upper], capsize=2, label=name.upper())
    ax.axhline(50, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(rows)), [f"{r['weights']}\n{r['mode']} {r['strength']:g}" for r in rows], fontsize=8)
    ax.set_ylabel("win rate vs unguided (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"VQ:MQ:TA weights, {report['clips_per_row']} clips per row (95% Wilson intervals)", fontsize=9)
    ax.legend(fontsize=8, ncols=len(objectives))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
