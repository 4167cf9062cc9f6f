"""The pytest plugin (entry point ``pytest11``: active wherever relay-actors is installed).

Fixtures:

- ``relay_emulator``: a RELAY emulator for the test (:class:`ScriptedEmulator`): place
  calls and messages, script callees, walk what happened.
- ``relay_app``: ``relay_app("myapp:client", *run_args, env={...})`` serves the app with
  ``relay-actors run`` against that emulator and returns its :class:`AppProcess`, ready;
  stopped when the test ends (live calls hung up, SIGTERM, drain, its process group
  killed), which fails the test if the app exited with an error or printed a traceback.

In-process by default; on a local Ray with ``relay_app(..., ray=True)``, the
``@pytest.mark.relay_ray`` marker, or ``pytest --relay-ray`` for every test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported by the fixtures: a pytest run that uses none pays nothing
    from .running import AppProcess, ScriptedEmulator

__all__ = ["relay_app", "relay_emulator"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("relay-actors")
    group.addoption(
        "--relay-ray",
        action="store_true",
        help="relay_app: serve every app on a local Ray (default: in-process)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "relay_ray: relay_app serves this test's apps on a local Ray")


@pytest.fixture
def relay_emulator() -> Iterator[ScriptedEmulator]:
    """A RELAY emulator for this test, on a thread of its own (see :class:`ScriptedEmulator`)."""
    from .running import ScriptedEmulator

    with ScriptedEmulator() as emulator:
        yield emulator


@pytest.fixture
def relay_app(
    request: pytest.FixtureRequest, relay_emulator: ScriptedEmulator
) -> Iterator[Callable[..., AppProcess]]:
    """``relay_app(target, *args, env=None, ray=None, cwd=None)``: serve ``MODULE:CLIENT``
    (importable from ``cwd``, default the pytest root) against ``relay_emulator``; ``args``
    go to ``relay-actors run`` (e.g. ``"--task", "campaign"``), ``env`` to the app's
    environment. Returns the ready :class:`AppProcess`."""
    from .running import AppError, AppProcess

    started: list[AppProcess] = []
    default_ray = bool(request.node.get_closest_marker("relay_ray")) or bool(
        request.config.getoption("relay_ray", default=False)
    )

    def start(target: str, *args: str, env: dict[str, str] | None = None, ray: bool | None = None,
              cwd: str | Path | None = None) -> AppProcess:  # fmt: skip
        on_ray = default_ray if ray is None else ray
        app = AppProcess(
            target, relay_emulator, *args, ray=on_ray, env=env, cwd=cwd or request.config.rootpath
        )
        if on_ray:  # a CallActor's first call, on a busy machine, can take a while
            relay_emulator.timeout = max(relay_emulator.timeout, 60.0)
        started.append(app)
        return app

    yield start
    if started:
        relay_emulator.hang_up_all()  # a drain need not wait for calls a failed test left up
    problems = []
    for app in reversed(started):
        code = app.stop()
        if code != 0 or "Traceback" in app.output:
            what = f"exited with {code}" if code != 0 else "printed a traceback"
            problems.append(f"relay-actors run {app.target} {what}:\n{app.tail()}")
    if problems:
        raise AppError("\n".join(problems))
