"""No page of the docs (nor the README) ships a placeholder where figures were meant to go:
a line that is one upper-case word (``CHECK``, ``SOAK``) or a TODO/TBD/XXX marker."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"^\s*[A-Z]{3,}\s*$|\b(TODO|TBD|XXX|FIXME)\b")


def test_no_page_has_a_placeholder() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for page in pages:
        in_code = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            elif not in_code and PLACEHOLDER.search(line):
                found.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert len(pages) > 10 and not found, found
