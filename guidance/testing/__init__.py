"""Not runtime code: what tests, smoke runs and benchmarks build instead of downloading a checkpoint.

``tiny/``: tiny, deterministic, randomly initialised pipelines of every family (``nrg make-tiny``).
The family adapters (``guidance.families``) never import this package.
"""
