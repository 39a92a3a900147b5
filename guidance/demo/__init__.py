"""The embedded default model: what ``nrg generate`` and ``nrg serve`` use without ``--model``.

It is a small Wan-architecture pipeline trained on the synthetic demo world (``demo_world.world``;
trained by ``nrg demo train``, see docs/demo.md) and committed with the package (``pipeline/``), loaded
through the same code path as any real checkpoint. ``reward/`` is its latent reward model (objectives
vq, mq, ta), trained on preference pairs labelled by the world's ground-truth metrics
(``demo_world.metrics``); it is the default reward of the embedded model. ``checkpoints/NAME/`` are
its aligned checkpoints (LoRAs trained by ``nrg align`` on demo-world pairs, docs/align.md), which
``nrg serve`` registers for the embedded model. Defaults are sized for a CPU.

Only these runtime assets live here; the tooling that made them is the top-level package
``demo_world`` (``nrg demo``, ``nrg eval``), which serving never imports.
"""

from __future__ import annotations

from pathlib import Path

from guidance.families.base import VideoShape

DEMO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = DEMO_DIR / "pipeline"
DEFAULT_REWARD_DIR = DEMO_DIR / "reward"
DEFAULT_CHECKPOINTS_DIR = DEMO_DIR / "checkpoints"
DEFAULT_SHAPE = VideoShape(height=64, width=64, frames=17)
DEFAULT_STEPS = 20


def embedded_checkpoints() -> dict[str, Path]:
    """The embedded model's aligned checkpoints by name (the subdirectories of ``checkpoints/``)."""
    if not DEFAULT_CHECKPOINTS_DIR.is_dir():
        return {}
    return {path.name: path for path in sorted(DEFAULT_CHECKPOINTS_DIR.iterdir()) if path.is_dir()}
