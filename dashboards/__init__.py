"""Grafana dashboards of relay-actors, defined in Python (see build.py)."""
