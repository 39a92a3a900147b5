"""Suite-wide settings.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined, so it is set here, at
import time of the root conftest, before pytest imports a single test module. Without a GPU it makes
the Triton kernels run in Triton's CPU interpreter, so the kernel tests really execute them.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family)``: a tiny diffusers directory of that family, written once per session;
    ``tiny_dir("wan-i2v")`` its image-to-video pipeline, ``tiny_dir("wan-ti2v-5b")`` one of its image-to-video
    variants (``guidance.testing.tiny.I2V_VARIANTS``)."""
    from guidance.testing.tiny import make_tiny

    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            name, _, kind = family.partition("-")
            cache[family] = make_tiny(name, tmp_path_factory.mktemp(f"tiny-{family}"), i2v=bool(kind),
                                      variant=None if kind in ("", "i2v") else kind)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_family(tiny_dir):
    """``tiny_family(family)``: the tiny pipeline loaded through the real loader (cached)."""
    from guidance.families import load_pipeline

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_pipeline(tiny_dir(family))
        return cache[family]

    return get
