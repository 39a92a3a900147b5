"""The nrg-client distribution stands alone: httpx and pydantic only, importable without torch."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

BLOCK_HEAVY = """
import sys
for name in ("torch", "numpy", "diffusers", "transformers", "guidance", "server", "tqdm"):
    sys.modules[name] = None  # any import of these now raises ImportError
import nrg_client, nrg_client.bench, nrg_client.async_client
from nrg_client import Client, AsyncClient
Client("http://127.0.0.1:1").close()
print("ok", nrg_client.__version__)
"""


def test_imports_without_torch_numpy_or_the_server():
    result = subprocess.run([sys.executable, "-c", BLOCK_HEAVY], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_declared_dependencies_are_httpx_and_pydantic_only():
    requires = importlib.metadata.requires("nrg-client") or []
    names = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requires}
    assert names == {"httpx", "pydantic"}
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["nrg-bench"] == "nrg_client.bench:main"


def test_nrg_bench_console_script_runs():
    script = Path(sys.executable).with_name("nrg-bench")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--num-prompts", "--max-concurrency", "--request-rate", "--weights", "--guided-fraction",
                 "--warmup-requests", "--size", "--num-frames", "--steps", "--seed", "--output-file"):
        assert flag in result.stdout, flag
