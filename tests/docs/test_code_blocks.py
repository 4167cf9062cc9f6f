"""The code in the documentation works as written.

- Every Python block of the site and the README (a ```` ```python ```` fence: a complete module) type-checks
  (mypy, as the package is) and imports; a fragment that continues an earlier block or stands inside
  a test (a ```` ```py ```` fence, highlighted the same) at least parses.
- The shell commands of Getting started are the ones this test runs (the emulator, the app served
  in-process, the caller's ``curl``, Ctrl-C), with the output the page shows; the few it does not run
  here (setup, the demo, the app on Ray) are each run by a named test, and a command added to the page
  without either fails this test.
- The README keeps its two quick-start commands and stays a first visit's length.
- Every public name has a docstring, so the API reference documents it.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def commands(path: Path) -> list[str]:
    """The commands of a page's ``bash`` blocks, continuation lines joined."""
    out = []
    for body in blocks(path, "bash"):
        for command in body.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command:
                out.append(re.sub(r"\s+", " ", command))
    return out


def shown_output(path: Path) -> str:
    return "\n".join(blocks(path, "text"))


# --- Python blocks ---------------------------------------------------------------------------


def python_blocks(language: str = "python") -> list[tuple[str, str]]:
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [
        (f"{page.relative_to(REPO)}#{n}", body)
        for page in pages
        for n, body in enumerate(blocks(page, language))
    ]


def test_python_fragments_parse() -> None:
    for where, body in python_blocks("py"):
        try:
            compile(body, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        except SyntaxError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_python_blocks_type_check_and_import(tmp_path: Path) -> None:
    found = python_blocks()
    assert len(found) >= 6, found  # README, home, getting started, migration, Ray
    files = []
    for n, (where, body) in enumerate(found):
        f = tmp_path / f"snippet_{n}.py"
        f.write_text(f"# {where}\n{body}")
        files.append(f)
    env = {**os.environ, "MYPYPATH": str(REPO)}
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-error-summary",
         "--cache-dir", str(REPO / ".mypy_cache"), *map(str, files)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    # Import each as a module (not __main__: no client.run()), with credentials a client accepts.
    check = (
        "import runpy, sys\n"
        "from relay_actors import RelayClient\n"
        "for path in sys.argv[1:]:\n"
        "    ns = runpy.run_path(path, run_name='snippet')\n"
        "    client = ns.get('client')\n"
        "    assert client is None or isinstance(client, RelayClient), (path, client)\n"
        "    print('ok', path)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SIGNALWIRE_PROJECT_ID": "p",
        "SIGNALWIRE_API_TOKEN": "t",
        "SIGNALWIRE_SPACE": "127.0.0.1:9",
    }
    imported = subprocess.run(
        [sys.executable, "-c", check, *map(str, files)], env=env, capture_output=True, text=True, timeout=120
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.count("ok ") == len(files)


# --- Getting started -------------------------------------------------------------------------

#: Commands of Getting started this test does not run, and the test that runs each (a fragment of it).
RUN_ELSEWHERE = {
    "bash .ci/setup": (".ci/run", "bash .ci/setup"),
    "source .venv/bin/activate": (".ci/setup", '"$PYTHON" -m venv .venv'),
    "relay-actors demo": ("tests/test_cli.py", '"relay_actors.cli", "demo"'),
    "relay-actors run hello:client --ray": (
        "tests/examples/test_examples_on_ray.py",
        '"relay-actors", "run", "examples.ivr.app:client", "--ray"',
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A command of the page, run with its output collected line by line."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()  # the end of the output

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._changed.wait(timeout=min(left, 1.0))
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)


@pytest.fixture
def started() -> Iterator[list[Process]]:
    procs: list[Process] = []
    yield procs
    for p in reversed(procs):
        p.stop()


def test_getting_started_commands_run_as_shown(tmp_path: Path, started: list[Process]) -> None:
    page = commands(GETTING_STARTED)
    here = [c for c in page if c not in RUN_ELSEWHERE]
    assert set(RUN_ELSEWHERE) <= set(page), "a command this test maps is no longer on the page"
    for command, (test_file, fragment) in RUN_ELSEWHERE.items():
        assert fragment in (REPO / test_file).read_text(), f"{test_file} no longer runs {command!r}"
    emulator_cmd, export_cmd, run_cmd, curl_cmd = here  # exactly these, in this order
    shown = shown_output(GETTING_STARTED)

    # The page's fixed ports, replaced by free ones so that runs side by side do not collide.
    ports = {"8765": str(free_port()), "8766": str(free_port())}

    def local(command: str) -> str:
        for fixed, port in ports.items():
            command = command.replace(fixed, port)
        return command

    def argv(command: str) -> list[str]:
        words = shlex.split(local(command))
        assert words[0] == "relay-actors", command
        return [sys.executable, "-m", "relay_actors.cli", *words[1:]]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key in [k for k in env if k.startswith("SIGNALWIRE_")]:
        del env[key]

    # relay-actors emulator ...: one JSON line, as shown (ports aside).
    emulator = Process(argv(emulator_cmd), tmp_path, env)
    started.append(emulator)
    ready = json.loads(emulator.wait_for(r'^\{"url"'))
    shown_ready = json.loads(re.search(r'^\{"url".*$', shown, re.M).group(0))  # type: ignore[union-attr]
    assert ready.keys() == shown_ready.keys()
    for key in ("url", "host", "control_url", "project", "token", "ca_file"):
        assert ready[key] == (local(shown_ready[key]) if isinstance(shown_ready[key], str) else None), key

    # export ...: the app's environment.
    assert export_cmd.startswith("export ")
    app_env = {**env, **dict(word.split("=", 1) for word in shlex.split(local(export_cmd))[1:])}

    # hello.py, as the page gives it; relay-actors run hello:client from its directory.
    (hello,) = [b for b in blocks(GETTING_STARTED, "python") if 'getLogger("hello")' in b]
    (tmp_path / "hello.py").write_text(hello)
    app = Process(argv(run_cmd), tmp_path, app_env)
    started.append(app)
    ready_line = app.wait_for(r"relay-actors: ready:")
    pattern = (
        r"relay-actors: ready: in-process, connected to 127\.0\.0\.1:\d+ \(protocol signalwire_[0-9a-f.]+\), "
        r"contexts office, metrics http://127\.0\.0\.1:\d+/metrics"
    )
    assert re.fullmatch(pattern, ready_line), ready_line
    assert re.search(pattern, shown), "the page's ready line is not what run prints"

    # curl ...: the emulator's answer, then the handler's log line, as shown.
    curl = subprocess.run(["bash", "-c", local(curl_cmd)], capture_output=True, text=True, timeout=30)
    answer = r'\{"call_ids":\["[0-9a-f-]{36}"\]\}'
    assert re.fullmatch(answer, curl.stdout.strip()), curl.stdout + curl.stderr
    assert re.search(answer, shown)
    pressed = r"INFO app=hello call_id=[0-9a-f-]{36} hello: caller \+\d+ pressed '7'$"
    app.wait_for(pressed, timeout=60)
    assert re.search(pressed, shown, re.M)

    # Ctrl-C: the two lines shown.
    app.proc.send_signal(signal.SIGINT)
    app.wait_for(r"^relay-actors: stopped$", timeout=60)
    assert app.proc.wait(timeout=30) == 0
    for line in app.lines:
        if line.startswith("relay-actors: SIGINT") or line == "relay-actors: stopped":
            assert line in shown.splitlines(), line


# --- README ----------------------------------------------------------------------------------


def test_readme_is_a_first_visit() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 120
    assert commands(REPO / "README.md")[:2] == [
        "bash .ci/setup && .venv/bin/relay-actors demo",
        ".venv/bin/python -m pytest",
    ]
    assert ".venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text()
    # Its links into the site and the repository lead somewhere.
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        assert (REPO / target).exists(), target


# --- docstrings ------------------------------------------------------------------------------


def public_objects() -> Iterator[tuple[str, object]]:
    import relay_actors
    from relay_actors import action, verbs
    from relay_actors.call_base import CallBase
    from relay_actors.ray_runtime import RayOptions, app_status, list_apps, stop_app

    for name in relay_actors.__all__:
        obj = getattr(relay_actors, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield name, obj
    yield from [("RayOptions", RayOptions), ("stop_app", stop_app), ("app_status", app_status)]
    yield "list_apps", list_apps
    classes = [relay_actors.RelayClient, relay_actors.Message, relay_actors.Backoff, CallBase, RayOptions]
    classes += [getattr(verbs, n) for n in verbs.__all__]
    classes += [c for _, c in inspect.getmembers(action, inspect.isclass) if issubclass(c, action.Action)]
    for cls in classes:
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                yield f"{cls.__name__}.{name}", member
            elif inspect.isfunction(member):
                yield f"{cls.__name__}.{name}", member


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for name, obj in public_objects() if not (getattr(obj, "__doc__", None) or "").strip()]
    assert not missing, f"public names without a docstring (the API reference shows them bare): {missing}"
