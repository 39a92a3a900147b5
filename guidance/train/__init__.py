"""Reward-model training (``nrg train-reward``); later alignment losses (Flow-DPO, Flow-RWR, ...).

- :mod:`guidance.train.preference_data`: the preference data set format, its loader and writer.
- :mod:`guidance.train.reward`: Bradley-Terry-with-ties training of a :class:`LatentRewardModel`.

Submodules import torch and diffusers lazily from here, so ``import guidance.train`` stays cheap.
"""

from __future__ import annotations

__all__ = ["preference_data", "reward"]
