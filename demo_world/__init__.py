"""The synthetic demo world's tooling: not needed to serve.

What ``nrg demo train|make-pairs|diagnose`` and ``nrg eval`` run (docs/demo.md, docs/align.md): the
world itself (``world.py``: the prompt grammar and its renderer), its ground-truth metrics
(``metrics.py``) and their differentiable oracle (``oracle.py``, ``diagnose.py``), training the demo
pipeline (``train.py``, ``fastpath.py``), ground-truth-labelled preference pairs (``pairs.py``),
rendered expert clips for Diffusion-DRO (``experts.py``), the ground truth as a judge (``judge.py``) and
the evaluation of guidance and of aligned checkpoints (``evaluate.py``, ``stats.py``, ``figures.py``,
``compare.py``).

The trained weights these produced are runtime assets and live in :mod:`guidance.demo` (the embedded
model, its reward and aligned checkpoints). ``demo_world`` imports ``guidance``; ``guidance`` never
imports ``demo_world``.
"""
