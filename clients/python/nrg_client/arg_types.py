"""Argument types shared by the client's command-line tools (``nrg-client``, ``nrg-bench``)."""

from __future__ import annotations

import argparse


def window(text: str) -> tuple[float, float]:
    """``T_LO,T_HI`` as two floats (the server checks their range and order)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be T_LO,T_HI, e.g. 0.2,0.8; got {text!r}") from None
    return lo, hi
