"""Fixtures for the Ray runtime tests: ONE local Ray per test session (kept on 127.0.0.1,
its own temp dir), an in-process emulator per test, and a factory of Ray-runtime
clients that are disconnected afterwards and checked to leave no actor behind.

Multi-node tests run a 3-node ``ray.cluster_utils.Cluster``, which cannot share a
process with the local Ray: ``test_multinode.py`` runs them in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import ray_helpers as helpers
from ray import cloudpickle
from ray_helpers import relay_actor_names

from relay_actors import RelayClient
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime.actor_messages import NAMESPACE

# Handlers defined in tests are shipped to CallActors by value: tests/ is not importable there.
cloudpickle.register_pickle_by_value(helpers)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = sys.modules.get(item.module.__name__) if item.module else None
        if module is not None and item.module.__name__.startswith("test_ray_"):
            cloudpickle.register_pickle_by_value(module)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[str]:
    """One local Ray for the session, on loopback, in a temp dir of its own."""
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="relay-ray-")
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        _temp_dir=tmp,
        num_cpus=4,
        namespace=NAMESPACE,
        logging_level="WARNING",
        log_to_driver=bool(os.environ.get("RELAY_TEST_RAY_LOGS")),
    )
    try:
        yield tmp
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS, journal_limit=100_000) as emu:
        yield emu


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_client(
    local_ray: str, emulator: Emulator, app_name: str
) -> AsyncIterator[Callable[..., Awaitable[RelayClient]]]:
    """``await make_client(on_call=..., **client_kwargs, ray=dict(RayOptions fields))``."""
    clients: list[RelayClient] = []
    recorders: list[Any] = []

    async def make(
        connect: bool = True,
        on_call: Any = None,
        on_message: Any = None,
        ray_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> RelayClient:
        opts = {"app": f"{app_name}{len(clients) or ''}", "min_call_actors": 2, "max_call_actors": 2}
        opts.update(ray_options or {})
        kw.setdefault("project", emulator.project)
        kw.setdefault("token", emulator.token)
        kw.setdefault("host", emulator.host)
        kw.setdefault("scheme", "ws")
        kw.setdefault("contexts", ["office"])
        kw.setdefault("backoff", Backoff(initial=0.05, cap=0.5))
        client = RelayClient(runtime="ray", ray_options=RayOptions(**opts), **kw)
        if on_call is not None:
            client.on_call(on_call)
        if on_message is not None:
            client.on_message(on_message)
        clients.append(client)
        if connect:
            await client.connect()
        return client

    make.recorders = recorders  # type: ignore[attr-defined]
    yield make
    for client in clients:
        await client.disconnect()
    for handle in recorders:
        ray.kill(handle)
    left = relay_actor_names(app_name)
    for name in left:  # never leak into the next test, even when this one failed
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    assert not left, f"actors left running after disconnect: {left}"


@pytest.fixture
def recorder(make_client: Any, app_name: str) -> tuple[str, Any]:
    """A named Recorder test actor: (name, handle)."""
    name = f"recorder-{app_name}"
    handle = helpers.start_recorder(name)
    make_client.recorders.append(handle)
    return name, handle
