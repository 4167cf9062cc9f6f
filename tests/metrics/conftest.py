"""Metrics tests: the repository root is importable (for ``dashboards``) however pytest is run."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
