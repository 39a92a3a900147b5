"""The constraints the Docker image installs with: the image's own packages at the image's versions,
the project's pins (``constraints.txt``) for everything else.

Dropping only ``torch==`` from ``constraints.txt`` left ``triton==3.9.0`` (and any other pin of a
package the base image ships) to fight the image's CUDA torch: pip then fails, or replaces the image's
torch with a CPU or mismatched build. Deriving the file from the image keeps every package the image
has exactly as it is. Standard library only: it runs in the image before anything is installed.

    pip list --format=freeze > /tmp/image.txt
    python docker/derive_constraints.py constraints.txt /tmp/image.txt > /tmp/constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``Jinja2`` and ``jinja2``, ``typing_extensions`` and ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines -> {canonical name: line}; comments, blanks and ``name @ url`` lines skipped."""
    found = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        name, sep, version = line.partition("==")
        if sep and name.strip() and version.strip():
            found[canonical(name.strip())] = f"{name.strip()}=={version.strip()}"
    return found


def derive(project: str, image: str) -> str:
    """The image's pins, then the project's pins of packages the image does not have."""
    image_pins, project_pins = pins(image), pins(project)
    lines = ["# the base image's packages, kept as they are", *sorted(image_pins.values(), key=str.lower),
             "# the project's pins for the rest (constraints.txt)",
             *sorted((line for name, line in project_pins.items() if name not in image_pins), key=str.lower)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: derive_constraints.py CONSTRAINTS IMAGE_FREEZE", file=sys.stderr)
        return 2
    sys.stdout.write(derive(Path(argv[0]).read_text(), Path(argv[1]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
