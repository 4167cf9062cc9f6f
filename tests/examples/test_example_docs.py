"""What the examples' READMEs say works as written: the SMS responder's own curl gets the
keyword its JSON line shows, and the documented job commands return and drain as promised.
(Not in ``test_example_apps.py``: each test there is shown word for word in its example's README.)"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_sms_readme_curl_gets_the_keyword_its_json_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's own curl body is answered with the keyword the README's JSON line shows."""
    import json
    import re

    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", "p")  # the module makes its client on import
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", "t")
    from examples.sms_responder.app import REPLIES, reply_for

    readme = (Path(__file__).parents[2] / "examples" / "sms_responder" / "README.md").read_text()
    body = json.loads(re.search(r"-d '(\{[^']*\"body\"[^']*\})'", readme).group(1))["body"]  # type: ignore[union-attr]
    documented = re.search(r'"keyword": "(\w+)"', readme).group(1)  # type: ignore[union-attr]
    assert reply_for(body) == (documented, REPLIES[documented]), body
    assert reply_for("  Stop!") == ("STOP", REPLIES["STOP"]) and reply_for("hello?")[0] == ""


def test_documented_job_commands_work_as_written() -> None:
    """A service's ``ray job submit`` returns (``--no-wait``; only a ``--task`` batch job ends by
    itself), and both recipes for a cluster set ``RAY_JOB_STOP_WAIT_TIME_S`` for the drain."""
    import re

    root = Path(__file__).parents[2]
    readmes = [*sorted((root / "examples").glob("*/README.md")), root / "examples" / "README.md"]
    readmes.append(root / "cluster" / "README.md")
    for readme in readmes:
        text = readme.read_text().replace("\\\n", " ")
        for command in re.findall(r"ray job submit[^\n]*", text):
            if "relay-actors run" in command and "--task" not in command:
                assert "--no-wait" in command, f"{readme}: {command}"
    for readme in (root / "examples" / "README.md", root / "cluster" / "README.md"):
        assert "RAY_JOB_STOP_WAIT_TIME_S" in readme.read_text(), readme
