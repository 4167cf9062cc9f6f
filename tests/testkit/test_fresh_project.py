"""The test kit from a fresh project outside this repository: a package in a temporary
directory with an app and a test file that uses only the documented fixtures, run by
``pytest`` in a subprocess that finds the plugin through its ``pytest11`` entry point (no
conftest, no ``-p``). Its test passes; a deliberately wrong one fails naming what the
caller heard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

APP = """
from relay_actors import Call, RelayClient

client = RelayClient(contexts=["front"])
DIGIT = {"digits": {"max": 1, "digit_timeout": 5}}


@client.on_call
async def greet(call: Call) -> None:
    await call.answer()
    prompt = await call.prompt_tts("Welcome. Press 1 for our opening hours.", DIGIT)
    result = (await prompt.wait(timeout=30)).params.get("result", {})
    if result.get("params", {}).get("digits") == "1":
        hours = await call.play_tts("We are open nine to five.")
        await hours.wait(timeout=30)
    await call.hangup()
"""

TEST = """
from relay_actors.testkit import press


def test_opening_hours(relay_emulator, relay_app):
    relay_app("frontdesk:client")
    call = relay_emulator.call("front", press("1"))
    call.expect.next_event().is_answered()
    call.expect.next_event().is_prompt("Welcome. Press 1 for our opening hours.")
    call.expect.next_event().is_collected(digits="1")
    call.expect.next_event().is_prompt("We are open nine to five.")
    call.expect.next_event().is_hangup(by="app")
    call.expect.no_more_events()
"""

#: The same test with a deliberately wrong expectation of the last prompt.
WRONG = TEST.replace("test_opening_hours", "test_closed_on_sundays").replace(
    'is_prompt("We are open nine to five.")', 'is_prompt("We are closed on Sundays.")'
)


def test_a_fresh_project_tests_its_app_with_the_plugin(tmp_path: Path) -> None:
    plugins = {ep.value for ep in entry_points(group="pytest11")}
    assert "relay_actors.testkit.plugin" in plugins, (
        "the pytest11 entry point is not registered: reinstall relay-actors (pip install -e .[dev])"
    )
    project = tmp_path / "frontdesk-project"
    project.mkdir()
    (project / "frontdesk.py").write_text(textwrap.dedent(APP))
    (project / "test_frontdesk.py").write_text(textwrap.dedent(TEST))
    (project / "test_wrong.py").write_text(textwrap.dedent(WRONG))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "test_frontdesk.py",
         "test_wrong.py"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert f"rootdir: {project}" in out, out  # the fresh project, not this repository
    assert "PASSED test_frontdesk.py::test_opening_hours" in out, out
    assert "FAILED test_wrong.py::test_closed_on_sundays" in out, out
    assert run.returncode == 1 and "1 failed, 1 passed" in out, out
    # The failure says what was expected and what the caller heard instead.
    assert "expected event 4 to be a prompt with text='We are closed on Sundays.', but it was: " in out, out
    assert "prompt 'We are open nine to five.'" in out and "what the caller heard and did:" in out, out
