"""Training-time alignment that produces the checkpoints the server hosts (``nrg align``, docs/align.md).

- :mod:`guidance.align.losses`: Flow-DPO (-log sigmoid of a winner-loser pair's implicit reward margin)
  and Flow-RWR (the flow-matching error weighted by exp(reward / tau)), as pure tensor math.
- :mod:`guidance.align.noising`: per family, the model timestep, the training target and the
  per-sample prediction error at a noise level t (flow: velocity; diffusion: eps or v).
- :mod:`guidance.align.data`: which clip of a preference pair wins for weighted objectives.
- :mod:`guidance.align.scored_clips`: the scored-clips data format (Flow-RWR), its loader and writer.
- :mod:`guidance.align.lora`: the trained LoRA adapter on the live transformer; the reference is the
  same transformer with the adapter disabled; saving in the diffusers LoRA layout; resumable state.
- :mod:`guidance.align.task`: what a method contributes to a step (its items and minibatch loss),
  Flow-DPO's task, and the seeded draws of t and noise every method shares.
- :mod:`guidance.align.config`: a run's settings, shared and per option group (torch-free).
- :mod:`guidance.align.trainer`: the training loop, the same for every method, deterministic per seed
  and resumable.
- :mod:`guidance.align.methods`: every method, a declaration and a task each, found by name in its
  registry (Flow-DPO with the IS-DAA, TVKD and Diff-UAPA options, Flow-RWR, Diffusion-DRO, SUDO, ABC,
  SPO / GradSPO, SPRO, hybrid offline-online).
- :mod:`guidance.align.report`: the held-out pairs, their implicit-reward accuracy and ``align_report.json``.
"""

from __future__ import annotations

__all__ = ["data", "lora", "losses", "methods", "noising", "report", "scored_clips", "task", "trainer"]
