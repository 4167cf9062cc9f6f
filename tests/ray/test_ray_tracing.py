"""Traces on Ray, exported by the real OTLP/HTTP exporter of every actor to a receiver in
this process: each call of a burst is one trace, with spans from the connection actor
(admission, placement) and the CallActor (the root, the link hop, the handler, the
commands and events); a message is one trace; a call that outlives a kill -9 of its
connection actor is still one trace."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray_helpers as helpers
from ray_helpers import eventually, kill9

from relay_actors import tracing

for _module in (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
):
    pytest.importorskip(_module, reason="needs relay-actors[otel]")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracing"))
from otlp_receiver import OtlpReceiver, Span, descends_from  # noqa: E402 (after the skips)

SECRET = "s3cret-ray-trace-key"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    yield from exporting(monkeypatch)


def exporting(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """The receiver, and the standard variables (read by the driver) pointing at it."""
    with OtlpReceiver() as rx:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={SECRET}",
            "OTEL_SERVICE_NAME": "relay-ray-trace-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            yield rx
        finally:
            tracing.shutdown()


async def on_message(message: Any) -> None:
    """An on_message handler for the message trace."""


async def traced(
    rx: OtlpReceiver, call_ids: list[str], message_ids: tuple[str, ...] = (), handled: bool = True
) -> bool:
    """Whether the traces of ``call_ids`` and ``message_ids`` have all come in whole (with
    their handler's span if ``handled``)."""
    calls = {r.attributes.get("relay.call_id") for r in rx.roots("relay.call") if rx.complete(r, handled)}
    messages = {r.attributes.get("relay.message_id") for r in rx.roots("relay.message") if rx.complete(r)}
    return set(call_ids) <= calls and set(message_ids) <= messages


def call_trace(rx: OtlpReceiver, call_id: str) -> tuple[Span, list[Span]]:
    roots = [r for r in rx.roots("relay.call") if r.attributes.get("relay.call_id") == call_id]
    assert len(roots) == 1, f"{call_id}: {len(roots)} root spans"
    root = roots[0]
    return root, rx.traces()[root.trace_id]


def check_ray_call(root: Span, spans: list[Span], call_id: str) -> None:
    """One call's trace on Ray: from the connection actor and the CallActor, all under the root."""
    by_id = {s.span_id: s for s in spans}
    assert [s for s in spans if not s.parent_id] == [root], "one root per call"
    assert all(descends_from(s, root, by_id) for s in spans if s is not root), [s.name for s in spans]
    assert root.attributes["relay.context"] == "office" and root.attributes["relay.direction"] == "inbound"
    assert root.attributes["relay.end_reason"] == "hangup"
    assert root.resource["relay.role"] == "call_actor"
    names = {s.name for s in spans}
    assert {"relay.admission", "relay.placement", "relay.link", "relay.handler", "relay.event"} <= names
    for span in spans:
        if span.name in ("relay.admission", "relay.placement"):
            assert span.resource["relay.role"] == "connection", span.resource
            assert span.resource["ray.actor.name"].endswith(":connection:0")
            assert span.attributes["relay.call_id"] == call_id and span.parent_id == root.span_id
    admission = next(s for s in spans if s.name == "relay.admission")
    assert root.start_ns == admission.start_ns  # the root starts at the offer's arrival
    assert admission.resource["process.pid"] != root.resource["process.pid"]
    methods = {s.attributes["relay.method"] for s in spans if "relay.method" in s.attributes}
    assert {"calling.answer", "calling.play", "calling.end"} <= methods, methods


@pytest.mark.timeout(180)
async def test_burst_and_message_on_ray(make_client, emulator, recorder, receiver) -> None:
    rec_name, _ = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, plays=1), on_message=on_message)
    call_ids = emulator.core.inject_calls("office", 6)
    message_id = emulator.core.messaging.inject("office")

    what = "every call's and the message's trace exported"
    await eventually(lambda: traced(receiver, call_ids, (message_id,)), 60, what=what)
    call_actor_pids = set()
    for cid in call_ids:
        root, spans = call_trace(receiver, cid)
        check_ray_call(root, spans, cid)
        call_actor_pids.add(root.resource["process.pid"])
        assert root.resource["service.name"] == "relay-ray-trace-test" and root.resource["ray.node_id"]
    assert len(call_actor_pids) == 2, "the burst was spread over both CallActors"
    messages = receiver.roots("relay.message")
    (message,) = [r for r in messages if r.attributes["relay.message_id"] == message_id]
    assert {s.name for s in receiver.traces()[message.trace_id]} == {"relay.message", "relay.handler"}
    # A call the driver dials lives in a CallActor: its trace holds the dial and the
    # driver's commands, sent through that actor.
    dialled = await relay.dial(
        [[{"type": "phone", "params": {"from_number": "+15550000001", "to_number": "+15550000002"}}]],
        dial_timeout=10,
    )
    await dialled.hangup()
    await dialled.wait_for_ended(timeout=10)

    what = "the dialled call's trace"
    await eventually(lambda: traced(receiver, [dialled.call_id], handled=False), 30, what=what)
    dial_root, dial_spans = call_trace(receiver, dialled.call_id)
    assert dial_root.attributes["relay.direction"] == "outbound"
    assert dial_root.resource["relay.role"] == "call_actor"
    assert {"calling.dial", "calling.end"} <= {s.attributes.get("relay.method") for s in dial_spans}
    # The headers (an API key) reached every exporting actor, though no actor argument held them.
    assert receiver.headers and all(h.get("x-api-key") == SECRET for h in receiver.headers)
    assert relay.runtime == "ray"


@pytest.mark.timeout(180)
async def test_call_outliving_a_connection_actor_kill_is_one_trace(
    make_client, emulator, recorder, receiver
) -> None:
    rec_name, rec = recorder
    relay = await make_client(on_call=helpers.recording_handler(rec_name, until_ended=True, hangup=False))
    # The kill comes ~0.3 s after the calls arrive; they end 4 s in, after it (delivered by
    # the restarted connection actor, live or on the resumed session).
    call_ids = emulator.core.inject_calls("office", 3, hangup_after=4.0)

    async def playing() -> Any:
        dump = await rec.dump.remote()
        return all(("calling.call.play", "playing") in dump["events"].get(cid, []) for cid in call_ids)

    await eventually(playing, 15, what="every call playing")
    old = (await relay.ray_stats())["connections"][0]
    assert {c["call_id"] for c in helpers.live_calls(emulator)} >= set(call_ids), "calls up at the kill"
    kill9(old["pid"])
    killed = time.time_ns()

    await eventually(lambda: traced(receiver, call_ids), 60, what="every call's trace exported")
    for cid in call_ids:
        root, spans = call_trace(receiver, cid)
        by_id = {s.span_id: s for s in spans}
        assert all(descends_from(s, root, by_id) for s in spans if s is not root)
        assert root.attributes["relay.end_reason"] == "hangup"
        # Spans from before and after the kill in the one trace: the killed actor's
        # admission, then the events (the end among them) its successor delivered.
        assert any(s.name == "relay.admission" and s.end_ns < killed for s in spans)
        after = [s for s in spans if s.name == "relay.event" and s.start_ns > killed]
        assert any(s.attributes.get("relay.call_state") == "ended" for s in after), "the end, after the kill"
        assert root.end_ns > killed
