"""Each example's README shows its test as it is: every test of ``test_example_apps.py``
appears, word for word, in the *Testing* section of the README of the example it tests."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests" / "examples" / "test_example_apps.py"
#: Test name prefix -> example directory.
EXAMPLES = {
    "test_ivr_": "ivr",
    "test_voicemail_": "voicemail",
    "test_dialer_": "dialer",
    "test_sms_": "sms_responder",
}


def test_every_example_test_is_in_its_readme() -> None:
    source = TESTS.read_text()
    lines = source.splitlines()
    shown: dict[str, int] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        example = next(d for prefix, d in EXAMPLES.items() if node.name.startswith(prefix))
        first = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        text = "\n".join(lines[first : node.end_lineno])
        readme = (REPO / "examples" / example / "README.md").read_text()
        assert text in readme.partition("## Testing")[2], (
            f"{node.name} differs from examples/{example}/README.md"
        )
        shown[example] = shown.get(example, 0) + 1
    assert sorted(shown) == sorted(EXAMPLES.values())
