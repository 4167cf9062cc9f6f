"""MkDocs hook: docstrings in the package use Sphinx cross-reference roles (``:class:`~a.b.C```), which
mkdocstrings' Google style leaves as text; show them as plain code, ``~`` shortening the path as Sphinx
does."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|mod|func|meth|attr|exc|data|obj|const):(<code>)(~?)([^<]*)(</code>)")


def _code(match: re.Match[str]) -> str:
    opening, tilde, target, closing = match.groups()
    return f"{opening}{target.rsplit('.', 1)[-1] if tilde else target}{closing}"


def on_post_page(output: str, page: Any, config: Any) -> str:
    return ROLE.sub(_code, output)
