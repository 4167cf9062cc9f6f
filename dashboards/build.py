"""Write (or check) the dashboards' JSON from their Python definitions.

    python -m dashboards.build           # rewrite dashboards/grafana/*.json
    python -m dashboards.build --check   # exit 1 if a committed file differs

The JSON files are committed so Grafana provisioning can load them as they are
(``cluster/grafana/provisioning/dashboards/relay.yaml`` points at
``dashboards/grafana``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import Dashboard
from .relay_dashboard import DASHBOARD

OUT = Path(__file__).resolve().parent / "grafana"
DASHBOARDS: list[Dashboard] = [DASHBOARD]


def rendered() -> dict[Path, str]:
    """Every dashboard's file and its exact text."""
    out: dict[Path, str] = {}
    for d in DASHBOARDS:
        out[OUT / f"{d.uid}.json"] = json.dumps(d.render(), indent=2, sort_keys=True) + "\n"
    return out


def queries() -> list[dict[str, Any]]:
    """Every query of every dashboard: ``uid``, ``panel`` id, ``title``, ``expr``."""
    return [
        {"uid": d.uid, "panel": p.id, "title": p.title, "expr": t.expr}
        for d in DASHBOARDS
        for p in d.panels()
        for t in p.targets
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        for path in stale:
            print(f"out of date: {path} (run python -m dashboards.build)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
