"""Traces of the in-process client, exported by the real OTLP/HTTP exporter to a receiver
that decodes them: a call is one trace (its commands and events under its root), a
message is one trace, and with tracing off nothing is exported at all."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from otel_support import SECRET_HEADER, need_otel, otel_env

from relay_actors import Call, Message, RelayClient, tracing
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until

need_otel()
from otlp_receiver import OtlpReceiver, Span, descends_from  # noqa: E402 (after the skip)

BURST = 5


def client_of(emulator: Emulator) -> RelayClient:
    return RelayClient(
        project=emulator.project,
        token=emulator.token,
        host=emulator.host,
        scheme="ws",
        contexts=["office"],
    )


def call_traces(rx: OtlpReceiver, count: int) -> dict[str, tuple[Span, list[Span]]]:
    """The ``count`` call traces received: call_id → (root, every span of its trace)."""
    traces = rx.traces()
    found = {}
    for root in rx.roots("relay.call"):
        found[root.attributes["relay.call_id"]] = (root, traces[root.trace_id])
    assert len(found) == count, f"{len(found)} call traces, expected {count}"
    return found


def check_call_trace(root: Span, spans: list[Span], call_id: str) -> None:
    """One call's trace: its root carries the call, its commands and events hang under it."""
    assert root.attributes["relay.context"] == "office"
    assert root.attributes["relay.direction"] == "inbound"
    assert root.attributes["relay.end_reason"] == "hangup"
    by_id = {s.span_id: s for s in spans}
    assert all(s.trace_id == root.trace_id for s in spans)
    assert [s for s in spans if not s.parent_id] == [root], "one root per call"
    under = [s for s in spans if s is not root]
    assert all(descends_from(s, root, by_id) for s in under), [s.name for s in under]
    commands = {s.attributes.get("relay.method"): s for s in under if "relay.method" in s.attributes}
    assert set(commands) >= {"calling.answer", "calling.play", "calling.end"}, set(commands)
    for method, span in commands.items():
        assert span.name == method and span.attributes["relay.call_id"] == call_id
        assert str(span.attributes["relay.code"]).startswith("2"), span.attributes
    handler = [s for s in under if s.name == "relay.handler"]
    assert len(handler) == 1
    # The handler's own commands are its children (its span is current in its task).
    assert commands["calling.answer"].parent_id == handler[0].span_id
    event_types = {s.attributes["relay.event_type"] for s in under if s.name == "relay.event"}
    assert {"calling.call.state", "calling.call.play"} <= event_types, event_types
    assert root.start_ns <= min(s.start_ns for s in under)


async def test_burst_of_calls_one_trace_each(
    emulator: Emulator,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for key, value in otel_env(receiver.endpoint).items():
        monkeypatch.setenv(key, value)
    client = client_of(emulator)
    done: asyncio.Queue[str] = asyncio.Queue()
    log = logging.getLogger("tests.tracing.app")

    @client.on_call
    async def handle(call: Call) -> None:
        await call.answer()
        log.info("answered %s", call.call_id)
        play = await call.play_tts("Hello")
        await play.wait(timeout=5)
        await call.hangup()
        await call.wait_for_ended(timeout=5)
        done.put_nowait(call.call_id)

    await client.connect()
    try:
        assert tracing.ENABLED
        with caplog.at_level(logging.INFO, logger="tests.tracing.app"):
            ids = emulator.core.inject_calls("office", BURST)
            ended = {await asyncio.wait_for(done.get(), 10) for _ in ids}
    finally:
        await client.disconnect()
    assert ended == set(ids)
    tracing.flush()
    await wait_until(lambda: sum(map(receiver.complete, receiver.roots("relay.call"))) >= BURST, timeout=10)
    traces = call_traces(receiver, BURST)
    assert set(traces) == set(ids)
    for call_id, (root, spans) in traces.items():
        check_call_trace(root, spans, call_id)
        assert root.resource["service.name"] == "relay-trace-test"
        assert root.resource["process.pid"] == os.getpid()
    # The exporter sent the configured header (an API key travels this way).
    assert all(h.get(SECRET_HEADER[0]) == SECRET_HEADER[1] for h in receiver.headers)
    # Log records inside a call carry its trace: logs and traces join.
    records = [r for r in caplog.records if r.getMessage().startswith("answered ")]
    assert len(records) == BURST
    for record in records:
        root, spans = traces[record.getMessage().split()[1]]
        assert record.trace_id == root.trace_id  # type: ignore[attr-defined]
        assert record.span_id in {s.span_id for s in spans}  # type: ignore[attr-defined]


async def test_messages_one_trace_each(
    emulator: Emulator, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in otel_env(receiver.endpoint).items():
        monkeypatch.setenv(key, value)
    client = client_of(emulator)
    handled: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @client.on_message
    async def on_message(message: Message) -> None:
        handled.set_result(message.message_id)

    await client.connect()
    try:
        sent = await client.send_message(to_number="+15550000002", from_number="+15550000001", body="hi")
        await sent.wait(timeout=5)
        inbound_id = emulator.core.messaging.inject("office")
        assert await asyncio.wait_for(handled, 5) == inbound_id
    finally:
        await client.disconnect()
    tracing.flush()
    await wait_until(lambda: len(receiver.roots("relay.message")) >= 2, timeout=10)
    roots = {r.attributes["relay.message_id"]: r for r in receiver.roots("relay.message")}
    assert set(roots) == {sent.message_id, inbound_id}
    outbound, inbound = roots[sent.message_id], roots[inbound_id]
    assert outbound.attributes["relay.direction"] == "outbound"
    assert outbound.attributes["relay.message_state"] == "delivered"
    assert inbound.attributes["relay.direction"] == "inbound"
    traces = receiver.traces()
    assert outbound.trace_id != inbound.trace_id
    assert {s.name for s in traces[outbound.trace_id]} == {"relay.message", "messaging.send"}
    assert {s.name for s in traces[inbound.trace_id]} == {"relay.message", "relay.handler"}


async def test_off_exports_nothing(
    emulator: Emulator, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = otel_env(receiver.endpoint)
    del env["OTEL_TRACES_EXPORTER"]  # everything else points at the receiver
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    client = client_of(emulator)
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    @client.on_call
    async def handle(call: Call) -> None:
        await call.answer()
        await call.hangup()
        await call.wait_for_ended(timeout=5)
        done.set_result(call)

    await client.connect()
    try:
        emulator.core.inject_calls("office", 1)
        call = await asyncio.wait_for(done, 5)
    finally:
        await client.disconnect()
    assert not tracing.ENABLED and call._trace is None
    assert tracing.flush()
    assert receiver.requests == 0 and receiver.spans == []


def test_off_imports_no_opentelemetry() -> None:
    """Off, not one module of OpenTelemetry is imported (the hooks test a flag only)."""
    script = textwrap.dedent(
        """
        import sys
        import relay_actors
        from relay_actors import RelayClient, tracing, logcontext
        from relay_actors import call_host, handlers
        logcontext.install()
        assert tracing.setup() is False and not tracing.ENABLED
        assert tracing.environment() == {}
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("clean")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr


def test_user_tracer_provider_is_honoured() -> None:
    """In-process, a TracerProvider the application set is used, with no variable set."""
    script = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from relay_actors import RelayClient
        from relay_actors.emulator import Emulator
        from relay_actors.emulator.testing import FAST_DURATIONS

        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)
        app_tracer = trace.get_tracer("my_app")

        async def main():
            async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
                client = RelayClient(project=emu.project, token=emu.token, host=emu.host,
                                     scheme="ws", contexts=["office"])
                done = asyncio.get_running_loop().create_future()

                @client.on_call
                async def handle(call):
                    with app_tracer.start_as_current_span("my_step"):
                        await call.answer()
                    await call.hangup()
                    await call.wait_for_ended(timeout=5)
                    done.set_result(call.call_id)

                await client.connect()
                emu.core.inject_calls("office", 1)
                call_id = await asyncio.wait_for(done, 5)
                await client.disconnect()
                return call_id

        call_id = asyncio.run(main())
        spans = memory.get_finished_spans()
        root = [s for s in spans if s.name == "relay.call"]
        assert len(root) == 1 and root[0].attributes["relay.call_id"] == call_id
        step = [s for s in spans if s.name == "my_step"][0]
        answer = [s for s in spans if s.name == "calling.answer"][0]
        # The app's own span hangs in the call's trace, and the command under it.
        assert step.context.trace_id == root[0].context.trace_id
        assert answer.parent.span_id == step.context.span_id
        print("honoured")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "honoured", out.stderr
