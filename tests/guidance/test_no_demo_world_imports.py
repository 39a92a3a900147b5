"""``guidance`` never imports ``demo_world``: the demo world is built on guidance, not the other way
round. Where guidance needs the world's truth (SPRO's ``--judge demo``), its caller passes it in."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

GUIDANCE = Path(__file__).resolve().parents[2] / "guidance"


def _imported_modules(path: Path) -> Iterator[str]:
    """Every absolute module an ``import`` or ``from ... import`` of the file names, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_guidance_never_imports_demo_world() -> None:
    offenders = sorted(f"{path.relative_to(GUIDANCE.parent)} imports {name}" for path in GUIDANCE.rglob("*.py")
                       for name in _imported_modules(path) if name.split(".")[0] == "demo_world")
    assert offenders == []
