"""``nrg --help`` and every subcommand's ``--help`` import no torch (nor diffusers, transformers, ray):
building the parser reads its choices and defaults from light modules, so help answers at once.

Each help runs in a fresh interpreter: in this process the other tests have long imported torch.
How long help takes is measured by ``benchmarks/cli_help_bench.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import command_paths

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "diffusers", "transformers", "ray")
#: Runs ``nrg WORDS --help`` through the console script's ``main``, then prints which heavy modules it imported.
PROGRAM = """
import json, sys
from server.cli import main
try:
    main([*json.loads(sys.argv[1]), "--help"])
    code = None
except SystemExit as exit:
    code = exit.code
print(json.dumps({"exit": code, "heavy": sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)}))
"""


@pytest.mark.parametrize("words", command_paths(), ids=lambda words: " ".join(("nrg", *words)))
def test_help_imports_no_torch(words: tuple[str, ...]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    result = subprocess.run([sys.executable, "-c", PROGRAM, json.dumps(words), json.dumps(HEAVY)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *help_text, last = result.stdout.splitlines()
    outcome = json.loads(last)
    assert outcome["exit"] == 0 and "usage: nrg" in "\n".join(help_text), result.stdout
    assert outcome["heavy"] == [], f"nrg {' '.join(words)} --help imported {', '.join(outcome['heavy'])}"
