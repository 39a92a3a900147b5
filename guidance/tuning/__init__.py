"""Calibrate and tune a latent reward for any pipeline, prompts and objectives (``nrg eval --calibrate`` and
``nrg eval --tune`` with ``--prompts FILE``; docs/your-model.md).

A reward from anywhere (``nrg init-reward``, ``nrg train-reward``, ``nrg reward distill``, a file someone
sent) needs two things before it is served: its calibration, so that jobs can report ``rewards_z``, and its
guidance defaults, so that a request giving only weights is steered at a strength that helps. Both are
measured here on the user's own model and prompts: ``calibrate`` from unguided clips, ``tune`` by a judge the
reward never was (the optimised reward would approve of whatever it pushed), choosing on tuning seeds and
reporting on other seeds. The demo world's own evaluation (``demo_world.evaluate``) stays separate: it
judges by a ground truth only that world has.
"""
