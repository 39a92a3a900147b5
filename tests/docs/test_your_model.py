"""docs/your-model.md runs as written: its ```bash blocks, in order, in one fresh shell from the
repository root, reach a served, steered job that reports both its reward and a held-out judge, a job
steered by a judge's gradient with no reward model, then calibrate and tune a reward of objectives no
judge shares by name."""

from __future__ import annotations

import re

import pytest

from tests.docs.doc_scripts import run_doc


@pytest.mark.slow
def test_the_tiny_recipe_runs_as_written(tmp_path):
    stdout = run_doc("your-model.md", 5, tmp_path)
    assert "judged by classic:sharpness,exposure (not optimised)" in stdout
    optimised = re.search(r"^optimised: \{'sharpness': .*, 'exposure': .*\}$", stdout, flags=re.MULTILINE)
    held_out = re.search(r"^held out: \{'held_out': \{'temporal_flickering': [0-9.]+\}\}$", stdout,
                         flags=re.MULTILINE)
    assert optimised and held_out, stdout[-3000:]
    judge_steered = re.search(r"^judge-steered: \{'sharpness': [0-9.]+\} decodes: [1-9][0-9]*$", stdout,
                              flags=re.MULTILINE)
    assert judge_steered and held_out.start() < judge_steered.start(), stdout[-3000:]
    assert re.search(r"^held out: \{'held_out': \{'temporal_flickering': [0-9.]+\}\}$",
                     stdout[judge_steered.end():], flags=re.MULTILINE), stdout[-3000:]
    assert "wrote calibration to" in stdout
    assert "each reward objective guided alone, judged by quality (not optimised)" in stdout
    assert re.search(r"^bright -> exposure +\d+ +\d+ +\d+ ", stdout, flags=re.MULTILINE), stdout[-3000:]
