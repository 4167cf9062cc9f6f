"""Helpers for the Ray runtime tests: a recording test actor, recording handlers, and
journal arithmetic (what the emulator sent per call).

This module and the test modules are pickled *by value* (see conftest), so the
handlers defined here run in CallActors without tests/ being importable there.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from relay_actors import chaos
from relay_actors.errors import RelayError
from relay_actors.ray_runtime.actor_messages import NAMESPACE

TEST_NAMESPACE = "relay_actors_tests"
#: Event types a recording handler listens to (after it registered, before it answers).
RECORDED_TYPES = chaos.RECORDED_TYPES


def start_recorder(name: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: a multi-node test removes worker nodes.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return (
        ray.remote(chaos.Recorder)
        .options(name=name, namespace=TEST_NAMESPACE, num_cpus=0, max_concurrency=1, scheduling_strategy=here)
        .remote()
    )


_recorders: dict[str, Any] = {}


def recorder(name: str) -> Any:
    """The recorder handle, from inside a CallActor (cached per process)."""
    handle = _recorders.get(name)
    if handle is None:
        handle = _recorders[name] = ray.get_actor(name, namespace=TEST_NAMESPACE)
    return handle


def recording_handler(
    rec_name: str,
    *,
    plays: int = 1,
    hangup: bool = True,
    until_ended: bool = False,
    stay: bool = False,
    raise_on: str | None = None,
    hang_on: str | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """An ``on_call`` handler that reports every state/play event it sees, its errors and
    its end. It answers, plays ``plays`` TTS prompts (with ``until_ended``: keeps
    playing until the call ends; with ``stay``: waits for the call to end), and hangs
    up. ``raise_on``/``hang_on``: a ``to`` number for which it raises / hangs forever
    after answering."""

    async def handler(call: Any) -> None:
        rec = recorder(rec_name)

        def seen(event: Any) -> None:
            params = event.params
            state = params.get("call_state") or params.get("state") or ""
            rec.event.remote(call.call_id, event.event_type, state)

        for event_type in RECORDED_TYPES:
            call.on(event_type, seen)
        rec.start.remote(
            call.call_id,
            {
                "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(),
                "recovered": call.recovered,
            },
        )
        try:
            if not call.recovered:
                await call.answer()
            if raise_on and call.to_number == raise_on:
                raise RuntimeError("handler failure on purpose")
            if hang_on and call.to_number == hang_on:
                await asyncio.Event().wait()
            if stay:
                await call.wait_for_ended(timeout=120)
            count = 0
            while count < plays or (until_ended and not call._core.ended):
                try:
                    play = await call.play_tts(f"prompt {count}")
                    await play.wait(timeout=10)
                except RelayError as exc:
                    rec.error.remote(call.call_id, exc.failure or exc.code)
                    if exc.failure == "call_ended" or call._core.ended:
                        break
                count += 1
            if hangup and not call._core.ended:
                try:
                    await call.hangup()
                except RelayError as exc:
                    rec.error.remote(call.call_id, exc.failure or exc.code)
        finally:
            rec.finish.remote(call.call_id)

    return handler


# --- what the emulator sent ------------------------------------------------------------


def sent_events(emulator: Any, types: tuple[str, ...] = RECORDED_TYPES) -> dict[str, list[tuple[str, str]]]:
    """Per call, the distinct events (by event id) of ``types`` the emulator sent over any
    session, without the offer's ``created`` state (the chaos suite's own arithmetic)."""
    return chaos.sent_events(emulator.core.journal.frames(), types)


def sent_requests(emulator: Any, method: str) -> list[dict[str, Any]]:
    """Params of every ``method`` request any session sent to the emulator."""
    found = []
    for entries in emulator.core.journal.frames().values():
        for entry in entries:
            frame = entry["frame"]
            if entry["dir"] == "in" and frame.get("method") == method:
                found.append(frame.get("params") or {})
    return found


# --- polling ------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[Any]], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Await ``probe()`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def live_calls(emulator: Any) -> list[dict[str, Any]]:
    return [c for c in emulator.core.list_calls() if c["state"] != "ended"]


def answered_calls(emulator: Any) -> int:
    return sum(1 for c in emulator.core.list_calls() if c["state"] in ("answered", "ending"))


def relay_actor_names(app: str | None = None) -> list[str]:
    """Named actors of relay-actors (of ``app``) that are alive."""
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith("relay:")
    ]
    return [n for n in names if app is None or n.startswith(f"relay:{app}:")]


def kill9(pid: int) -> None:
    import signal

    os.kill(pid, signal.SIGKILL)
