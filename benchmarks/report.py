"""What every benchmark of this package does with its figures once measured: print the markdown
section for docs/benchmarks.md, write it and the JSON result where asked, and say when the machine
was too loaded for the figures to mean much."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def publish(result: dict[str, Any], text: str, markdown: Path | None, output_file: Path | None, cores: int,
            log: Callable[[str], None]) -> None:
    """``result`` carries ``load_start`` and ``load_end`` (``os.getloadavg()`` before and after)."""
    print(text)
    if markdown is not None:
        markdown.write_text(text + "\n")
    if output_file is not None:
        output_file.write_text(json.dumps(result, indent=2) + "\n")
    if max(result["load_start"][0], result["load_end"][0]) > cores:
        log("warning: the load average exceeded the core count; the figures are unreliable")
