"""The folder tree is the architecture: each third-party runtime stays inside its layer.

The ruff rule TID251 (``pyproject.toml``) flags these imports as they are written; this
test also catches what a per-file exemption would let through (websockets inside the
Ray runtime, say) and any import spelled dynamically.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "relay_actors"

#: top-level module -> the only places in the package allowed to import it
ALLOWED = {
    "ray": ("ray_runtime/",),
    "websockets": ("connection.py", "emulator/"),
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_ray_and_websockets_stay_in_their_layers() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for module, allowed in ALLOWED.items():
            if module in _imports(path) and not rel.startswith(allowed):
                offenders.append(f"{rel} imports {module}")
    assert offenders == []


def test_the_ray_runtime_is_a_subpackage_with_the_actors_and_the_link() -> None:
    names = {p.stem for p in (PACKAGE / "ray_runtime").glob("*.py")}
    assert {
        "driver",
        "connection_actor",
        "router",
        "call_actor",
        "actor_link",
        "link_protocol",
        "actor_messages",
        "admission",
        "placement",
        "kvstore",
    } <= names
    # none of them left behind at the top
    assert not names & {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}


def test_the_in_process_client_never_imports_ray() -> None:
    code = (
        "import sys, relay_actors\n"
        "from relay_actors import RelayClient\n"
        "RelayClient(project='p', token='t', host='127.0.0.1:1', contexts=['x'])\n"
        "print('ray' in sys.modules, 'ray.util' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_the_lint_rule_flags_an_import_outside_its_layer(module: str, tmp_path: pathlib.Path) -> None:
    """The rule is live: ruff, with the project's configuration, rejects a stray import."""
    root = PACKAGE.parent
    stray = PACKAGE / f"_layout_probe_{module}.py"
    stray.write_text(f"import {module}\n\nprint({module})\n")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", str(stray)],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=60,
        )
    finally:
        stray.unlink()
    assert out.returncode == 1
    assert "TID251" in out.stdout


#: The only unpickling in the package: the app's handlers, which the driver sends
#: through Ray (a CallActor's constructor argument, a ``dial_remote`` argument), never
#: bytes from a socket of ours (the links decode JSON only: ``link_protocol``; the
#: hostile-peer tests in tests/link send them pickles). An upgraded app's handlers also
#: come back from the router's stored state, in the app's secrets namespace of Ray's KV
#: store, which only a client of the cluster can write (and such a client can run code
#: on it anyway). Anything new here must say where its bytes come from.
PICKLE_LOADS_ALLOWED = {
    ("ray_runtime/call_actor.py", "__init__"),
    ("ray_runtime/call_actor.py", "dial_remote"),
}
_PICKLERS = {"pickle", "cloudpickle", "_pickle", "dill", "marshal"}
_UNPICKLERS = {"loads", "load", "Unpickler"}


def _pickle_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound to a pickle module, and names bound to one of its loaders."""
    modules: set[str] = set()
    loaders: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.split(".")[-1] in _PICKLERS}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if a.name in _PICKLERS:  # from ray import cloudpickle
                    modules.add(a.asname or a.name)
                elif node.module.split(".")[-1] in _PICKLERS and a.name in _UNPICKLERS:
                    loaders.add(a.asname or a.name)
    return modules, loaders


def test_nothing_is_unpickled_outside_the_two_reviewed_places() -> None:
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        modules, loaders = _pickle_names(tree)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                target = node.func if isinstance(node, ast.Call) else None
                via_module = (
                    isinstance(target, ast.Attribute)
                    and target.attr in _UNPICKLERS
                    and isinstance(target.value, ast.Name)
                    and target.value.id in modules
                )
                if via_module or (isinstance(target, ast.Name) and target.id in loaders):
                    found.add((path.relative_to(PACKAGE).as_posix(), func.name))
    assert found == PICKLE_LOADS_ALLOWED, found


# --- the Ray runtime: no import circle, no private names across modules, one place
# that creates actors, cores without Ray or networking ------------------------------

RUNTIME = PACKAGE / "ray_runtime"
#: The package's facade re-exports the driver's public API; nothing else may import it.
DRIVER_IMPORT_ALLOWED = {"__init__.py"}
#: The one module that creates actors (``ray.remote(...)``, ``@ray.remote``).
SPAWNS = {"spawn.py"}
#: Plain decisions: neither Ray nor sockets nor asyncio's networking.
CORES = {
    "actor_messages.py",
    "commands_in_doubt.py",
    "pool_core.py",
    "app_lifecycle.py",
    "placement.py",
    "admission.py",
    "link_protocol.py",
    "shard_core.py",
    "shard_pool.py",
    "shard_recovery.py",
    "shard_requests.py",
    "shard_room.py",
    "shard_startup.py",
    "event_dedupe.py",
}
_NETWORKING = {"ray", "socket", "asyncio", "websockets", "ssl", "selectors"}


def _relative_imports(tree: ast.AST, type_only: bool = True) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from .x import a, b`` (module ``""`` for ``from . import``);
    without ``type_only``, those under ``if TYPE_CHECKING:`` are left out."""
    skipped: set[int] = set()
    if not type_only:
        for node in ast.walk(tree):
            test = getattr(node, "test", None)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test or ast.Pass()):
                skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return [
        (node.module or "", [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0 and id(node) not in skipped
    ]


def _runtime_files(root: pathlib.Path) -> list[tuple[str, ast.AST]]:
    return [(p.name, ast.parse(p.read_text(), filename=str(p))) for p in sorted(root.glob("*.py"))]


def driver_importers(root: pathlib.Path) -> list[str]:
    found = []
    for name, tree in _runtime_files(root):
        for module, names in _relative_imports(tree):
            if (module.split(".")[-1] == "driver" or (not module and "driver" in names)) and (
                name not in DRIVER_IMPORT_ALLOWED
            ):
                found.append(name)
    return found


def private_imports(root: pathlib.Path) -> list[str]:
    """``from .x import _name`` and ``x._name`` on a module imported from the package."""
    found = []
    for name, tree in _runtime_files(root):
        modules = set()
        for module, names in _relative_imports(tree):
            found += [f"{name}: {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
            if not module:
                modules.update(names)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    return found


def actor_creations(root: pathlib.Path) -> list[str]:
    """Where ``ray.remote`` is called or used as a decorator, outside :data:`SPAWNS`."""
    found = []
    for name, tree in _runtime_files(root):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "remote"
                and isinstance(node.value, ast.Name)
                and node.value.id == "ray"
                and name not in SPAWNS
            ):
                found.append(f"{name}:{node.lineno}")
    return found


def core_networking(root: pathlib.Path) -> list[str]:
    found = []
    for name, _tree in _runtime_files(root):
        if name in CORES:
            found += [f"{name} imports {m}" for m in sorted(_imports(root / name) & _NETWORKING)]
    return found


#: The link items' codec: the one module that reads wire arrays by index. (``pool_core``:
#: the router's reports from the shards, a protocol of their own, not link items.)
WIRE_READERS = {"actor_messages.py", "pool_core.py"}


def wire_indexing(root: pathlib.Path) -> list[str]:
    """``item[<n>]`` / ``wire[<n>]`` outside the codec: link items are read by attribute."""
    found = []
    for name, tree in _runtime_files(root):
        if name in WIRE_READERS:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("item", "wire")
                and isinstance(node.slice, (ast.Constant, ast.Slice))
            ):
                found.append(f"{name}:{node.lineno}")
    return found


RUNTIME_RULES = {
    "driver_importers": driver_importers,
    "wire_indexing": wire_indexing,
    "private_imports": private_imports,
    "actor_creations": actor_creations,
    "core_networking": core_networking,
}

#: For each rule, a module that breaks it (written into a copy of nothing but itself).
PROBES = {
    "driver_importers": ("router.py", "from .driver import RayRuntime\n"),
    "private_imports": (
        "router.py",
        "from . import kvstore\nfrom .call_actor import _where\nkvstore._client()\n",
    ),
    "actor_creations": ("router.py", "import ray\n\nray.remote(object).options(name='x').remote()\n"),
    "core_networking": ("pool_core.py", "import asyncio\nimport ray\n"),
    "wire_indexing": ("shard_core.py", "def f(item):\n    return item[1], item[2:]\n"),
}


@pytest.mark.parametrize("rule", sorted(RUNTIME_RULES))
def test_the_ray_runtime_keeps_its_rules(rule: str) -> None:
    assert RUNTIME_RULES[rule](RUNTIME) == []


@pytest.mark.parametrize("rule", sorted(RUNTIME_RULES))
def test_each_runtime_rule_fails_on_a_probe(rule: str, tmp_path: pathlib.Path) -> None:
    name, source = PROBES[rule]
    (tmp_path / name).write_text(source)
    (tmp_path / "__init__.py").write_text("from .driver import RayRuntime\n")  # the allowed facade
    (tmp_path / "spawn.py").write_text("import ray\n\nray.remote(object)\n")  # the allowed creator
    found = RUNTIME_RULES[rule](tmp_path)
    assert found and all(name in f for f in found), found
    if rule == "private_imports":
        assert len(found) == 2  # the import and the attribute


def import_cycles(root: pathlib.Path) -> list[list[str]]:
    """Circles among the runtime's modules, counting every import (also one inside a
    function, which only defers a circle) but those for type hints alone (``if TYPE_CHECKING:``:
    never run, so no load order depends on them); the package facade (``__init__``) aside."""
    graph: dict[str, set[str]] = {}
    for name, tree in _runtime_files(root):
        if name == "__init__.py":
            continue
        deps = graph.setdefault(name[:-3], set())
        for module, names in _relative_imports(tree, type_only=False):
            deps.update([module.split(".")[-1]] if module else names)
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                cycle = path[path.index(dep) :]
                if min(cycle) == cycle[0]:  # each circle once
                    cycles.append(cycle)
            elif dep in graph:
                visit(dep, [*path, dep])

    for start in sorted(graph):
        visit(start, [start])
    return cycles


def test_the_runtime_modules_import_each_other_without_a_circle(tmp_path: pathlib.Path) -> None:
    assert import_cycles(RUNTIME) == []
    (tmp_path / "router.py").write_text("def f():\n    from .call_actor import CallActor\n")
    (tmp_path / "call_actor.py").write_text("from . import router\n")
    assert import_cycles(tmp_path) == [["call_actor", "router"]]
    # A reference for type hints alone is no circle; the same import run at load time is.
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import router\n"
    (tmp_path / "call_actor.py").write_text(type_only)
    assert import_cycles(tmp_path) == []
