"""The embedded default model: what ``nrg generate`` and ``nrg serve`` use without ``--model``.

It is a small Wan-architecture pipeline committed with the package (``pipeline/``), loaded through
the same code path as any real checkpoint. Its defaults are sized for a CPU.
"""

from __future__ import annotations

from pathlib import Path

from guidance.families.base import VideoShape

DEMO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = DEMO_DIR / "pipeline"
DEFAULT_SHAPE = VideoShape(height=64, width=64, frames=17)
DEFAULT_STEPS = 20
