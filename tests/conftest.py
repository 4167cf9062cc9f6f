"""The whole suite: apps started by tests take any free metrics port, never the documented
default (9478), so test sessions running side by side on one machine do not collide. The
test of the default port (tests/metrics/test_ray_prometheus.py) unsets this for its app."""

from __future__ import annotations

import os

os.environ.setdefault("RELAY_METRICS_PORT", "0")
