"""Running a doc's ```bash blocks as a user would: in order, in one fresh shell from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def run_doc(doc: str, blocks: int, tmp_path: Path) -> str:
    """Run the ``blocks`` ```bash blocks of docs/``doc`` (their count is checked, so a block added or lost
    shows) with ``set -euo pipefail``; their stdout. The doc names ``.venv/bin``: a CI venv elsewhere stands
    in through a link from a scratch directory."""
    found = bash_blocks((ROOT / "docs" / doc).read_text())
    assert len(found) == blocks, f"docs/{doc} has {len(found)} bash blocks; the test expects {blocks}"
    script = "set -euo pipefail\n" + "\n".join(found)
    if not (ROOT / ".venv" / "bin" / "nrg").exists():
        (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    cwd = ROOT if (ROOT / ".venv" / "bin" / "nrg").exists() else tmp_path
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout
