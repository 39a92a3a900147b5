"""SUDO (``--method sudo``): winners from the data, their losers made on the fly by video-native
transformations (:mod:`.transforms`). Its task: :mod:`.sudo_task`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from guidance.align.methods.base import Method, Options, option

if TYPE_CHECKING:
    from guidance.align.config import AlignConfig

SUDO_TRANSFORMS_DEFAULT = "permute,reverse,shuffle,blur,noise"


@dataclass(frozen=True)
class SudoOptions(Options):
    title = "SUDO"
    sudo_transforms: str = option(
        SUDO_TRANSFORMS_DEFAULT,
        "SUDO losers: permute (TA), reverse / shuffle (MQ), blur / noise (VQ) (default %(default)s)")
    sudo_sft: float = option(0.5, "SUDO weight of the winner's FM loss (default %(default)g)",
                             (lambda v: 0 <= v <= 1, "in [0, 1]"))
    sudo_blur: int = option(1, "SUDO blur radius in latent pixels (default %(default)s)", (lambda v: v >= 1, ">= 1"))
    sudo_noise: float = option(0.5, "SUDO noise std in latent units (default %(default)g)", (lambda v: v > 0, "> 0"))


def _check(config: AlignConfig) -> None:
    """The transformations are known ones: checked before any loading (only a SUDO run uses them)."""
    from guidance.align.methods.transforms import parse_transforms

    parse_transforms(config.option(SudoOptions).sudo_transforms)


SUDO = Method("sudo", data="either", options=(SudoOptions,), task="guidance.align.methods.sudo_task:build",
              check=_check)
