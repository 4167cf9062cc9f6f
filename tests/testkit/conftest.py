"""The test kit's fixtures, also where relay-actors was installed before its pytest11 entry
point existed (then ``pip install -e .`` registers the plugin; tests/testkit/test_fresh_project.py
checks that it is)."""

from relay_actors.testkit.plugin import relay_app, relay_emulator

__all__ = ["relay_app", "relay_emulator"]
