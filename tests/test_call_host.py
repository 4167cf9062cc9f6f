"""The call host, sans-IO style: events fed in, requests checked on the way out.

A :class:`FakeWire` stands in for the runtime (the HostTransport and its one lane):
every request the host makes is recorded, and its result is the one the test gives.
No socket, no Ray: what is checked here is the logic every runtime shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from relay_actors.call import Call
from relay_actors.call_host import CallHost, Offer
from relay_actors.errors import RelayError
from relay_actors.message import Message
from relay_actors.protocol import constants as c
from relay_actors.protocol.events import RelayEvent
from relay_actors.tasks import BackgroundTasks


class FakeWire:
    """Transport and lane in one: requests are recorded; each gets the result set for
    its method (``{"code": "200"}`` by default), or waits for :meth:`answer`."""

    def __init__(self, context: str | None = "proto-1") -> None:
        self.tasks = BackgroundTasks()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.held: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.abandoned: list[str] = []
        self.sent: list[str] = []
        self.context = context

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.requests.append((method, params))
        if method in self.held:
            return await self.held.pop(method)
        return self.results.get(method, {"code": "200"})

    def hold(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """The next ``method`` request waits until the returned future is set."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.held[method] = future
        return future

    def sent_of(self, method: str) -> list[dict[str, Any]]:
        return [params for m, params in self.requests if m == method]

    # HostTransport
    def lane(self) -> FakeWire:
        return self

    def default_context(self) -> str | None:
        return self.context

    def dial_abandoned(self, lane: Any, tag: str) -> None:
        self.abandoned.append(tag)

    def message_sent(self, host: CallHost, message: Message, result: dict[str, Any]) -> None:
        self.sent.append(message.message_id)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the host's tasks run until ``condition`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0)


def make_host(wire: FakeWire, **options: Any) -> CallHost:
    return CallHost(wire, capacity=options.pop("capacity", 10), tasks=wire.tasks, **options)


def state(call_id: str, call_state: str, tag: str = "", node: str = "n1") -> RelayEvent:
    params = {"call_id": call_id, "node_id": node, "call_state": call_state}
    if tag:
        params["tag"] = tag
    return RelayEvent(c.EVENT_CALL_STATE, params, call_id)


def offer(call_id: str) -> RelayEvent:
    params = {
        "call_id": call_id,
        "node_id": "n1",
        "context": "office",
        "call_state": "created",
        "device": {"type": "phone", "params": {"from_number": "+15551", "to_number": "+15552"}},
    }
    return RelayEvent(c.EVENT_CALL_RECEIVE, params, call_id)


async def test_offer_runs_the_handler_whose_answer_goes_out_and_ends_with_the_call() -> None:
    wire = FakeWire()
    host = make_host(wire)
    handled: list[Call] = []

    async def on_call(call: Call) -> None:
        handled.append(call)
        await call.answer()
        await call.wait_for_ended()

    host.on_call = on_call
    host.feed(offer("c1"))
    host.feed(offer("c1"))  # redelivered: the same call, one handler
    await until(lambda: bool(wire.sent_of("calling.answer")))
    assert wire.sent_of("calling.answer") == [{"node_id": "n1", "call_id": "c1"}]
    assert len(handled) == 1 and handled[0].from_number == "+15551" and host.calls == {"c1": handled[0]}
    host.feed(state("c1", "answered"))
    host.feed(state("c1", "ended"))
    await until(lambda: host.counters["handlers_completed"] == 1)
    assert handled[0].state == "ended" and not host.calls
    assert host.counters["offers"] == 2
    await until(lambda: len(wire.tasks) == 0)  # the handler's task is gone too


async def test_a_failing_handler_hangs_its_call_up() -> None:
    wire = FakeWire()
    host = make_host(wire)

    async def on_call(call: Call) -> None:
        raise ValueError("bug")

    host.on_call = on_call
    host.feed(offer("c1"))
    await until(lambda: host.counters["calls_hung_up_handler_error"] == 1)
    assert wire.sent_of("calling.end") == [{"node_id": "n1", "call_id": "c1", "reason": "error"}]


async def test_offers_beyond_capacity_are_dropped_or_passed() -> None:
    wire = FakeWire()
    host = make_host(wire, capacity=1, over_limit="pass")
    host.feed(offer("c1"))
    host.feed(offer("c2"))
    await until(lambda: bool(wire.sent_of("calling.pass")))
    assert wire.sent_of("calling.pass") == [{"call_id": "c2", "node_id": "n1"}]
    assert list(host.calls) == ["c1"] and host.counters["offers_passed"] == 1
    # A runtime that routes elsewhere (a CallActor) hears "full" and places it elsewhere.
    assert host.offer(wire, offer("c3").params) is Offer.FULL
    assert host.offer(wire, offer("c1").params) is Offer.KNOWN
    dropping = make_host(FakeWire(), capacity=0)
    dropping.feed(offer("c9"))
    assert dropping.counters["offers_dropped"] == 1 and not dropping.calls


async def test_inbound_message_runs_on_message() -> None:
    wire = FakeWire()
    host = make_host(wire)
    got: list[Message] = []

    async def on_message(message: Message) -> None:
        got.append(message)

    host.on_message = on_message
    params = {"message_id": "m9", "context": "office", "from_number": "+1", "to_number": "+2", "body": "hi"}
    host.feed(RelayEvent(c.EVENT_MESSAGING_RECEIVE, params))
    await until(lambda: bool(got))
    assert (got[0].message_id, got[0].body, got[0].direction) == ("m9", "hi", "inbound")
    assert wire.requests == []


async def test_dial_winner_is_the_answered_leg_and_a_late_leg_of_a_given_up_dial_is_hung_up_once() -> None:
    wire = FakeWire()
    host = make_host(wire)
    device = {"type": "phone", "params": {"to_number": "+1", "from_number": "+2"}}

    # A dial that is answered: its legs announce themselves, the dial event names the winner.
    dialing = asyncio.ensure_future(host.dial(device, tag="t1", max_duration=60, region=None))
    await until(lambda: bool(wire.sent_of("calling.dial")))
    assert wire.sent_of("calling.dial") == [{"tag": "t1", "devices": [[device]], "max_duration": 60}]
    assert host.pending_dials == 1
    host.feed(state("L1", "ringing", tag="t1"))
    host.feed(state("L2", "ringing", tag="t1"))
    winner = {"call_id": "L1", "node_id": "n1", "tag": "t1"}
    host.feed(RelayEvent(c.EVENT_CALL_DIAL, {"tag": "t1", "dial_state": "answered", "call": winner}))
    call = await asyncio.wait_for(dialing, 5)
    assert call.call_id == "L1" and call.state == "answered" and call is host.calls["L1"]
    assert host.pending_dials == 0 and wire.abandoned == []

    # A dial given up on: the leg known then is hung up, and so is one that shows up later, once.
    given_up = asyncio.ensure_future(host.dial(device, tag="t2", dial_timeout=30))
    await until(lambda: len(wire.sent_of("calling.dial")) == 2)
    host.feed(state("L3", "ringing", tag="t2"))
    given_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given_up
    assert wire.abandoned == ["t2"]
    await until(lambda: len(wire.sent_of("calling.end")) == 1)
    assert wire.sent_of("calling.end") == [{"node_id": "n1", "call_id": "L3", "reason": "cancel"}]
    host.feed(state("L4", "ringing", tag="t2"))  # the serial dial's next group rings
    host.feed(state("L4", "answered", tag="t2"))
    host.feed(state("L5", "ended", tag="t2"))  # ended by itself: nothing to do
    await until(lambda: len(wire.sent_of("calling.end")) == 2)
    assert wire.sent_of("calling.end")[1] == {"call_id": "L4", "node_id": "n1", "reason": "cancel"}
    assert host.counters["dial_orphans_ended"] == 1 and host.pending_dials == 0


async def test_dial_failed_and_pre_routed_dial_items() -> None:
    wire = FakeWire()
    host = make_host(wire)
    device = {"type": "phone", "params": {"to_number": "+1", "from_number": "+2"}}
    failing = asyncio.ensure_future(host.dial(device, tag="t3"))
    await until(lambda: bool(wire.sent_of("calling.dial")))
    # As a CallActor is fed: the leg and the outcome come already routed by the shard.
    host.dial_leg(wire, {"call_id": "L7", "node_id": "n1", "tag": "t3", "call_state": "ringing"})
    assert host.owned_by(wire) == {"calls": [("L7", "n1")], "dials": ["t3"], "messages": []}
    host.dial_done("t3", False, {})
    with pytest.raises(RelayError) as failed:
        await asyncio.wait_for(failing, 5)
    assert failed.value.failure == "dial_failed"


async def test_send_message_is_tracked_and_keeps_states_that_beat_its_result() -> None:
    wire = FakeWire()
    host = make_host(wire)
    result = wire.hold("messaging.send")
    completed: list[RelayEvent] = []
    sending = asyncio.ensure_future(
        host.send_message(to_number="+1", from_number="+2", body="hi", on_completed=completed.append)
    )
    await until(lambda: bool(wire.sent_of("messaging.send")))
    assert wire.sent_of("messaging.send") == [
        {"context": "proto-1", "to_number": "+1", "from_number": "+2", "body": "hi"}
    ]

    def status(value: str) -> RelayEvent:
        return RelayEvent(c.EVENT_MESSAGING_STATE, {"message_id": "m1", "message_state": value})

    host.feed(status("sent"))  # before the send's result: kept, not lost
    result.set_result({"code": "200", "message_id": "m1"})
    message = await asyncio.wait_for(sending, 5)
    assert (message.message_id, message.context, message.state) == ("m1", "proto-1", "sent")
    assert host.messages == {"m1": message} and wire.sent == ["m1"]
    assert host.owned_by(wire)["messages"] == ["m1"]
    host.message_state(status("delivered"))  # as a CallActor is fed: routed already
    event = await message.wait(5)
    assert event.params["message_state"] == "delivered" and message.state == "delivered"
    await until(lambda: bool(completed))
    assert host.messages == {} and host.stats()["tracked_messages"] == 0


async def test_losing_the_session_ends_calls_and_fails_dials_and_messages() -> None:
    wire = FakeWire(context=None)
    host = make_host(wire)
    host.feed(offer("c1"))
    wire.results["messaging.send"] = {"code": "200", "message_id": "m2", "context": "filled-in"}
    message = await host.send_message(to_number="+1", from_number="+2", media=["https://x/y.png"])
    assert "context" not in wire.sent_of("messaging.send")[0] and message.context == "filled-in"
    dialing = asyncio.ensure_future(host.dial({"type": "phone", "params": {"to_number": "+1"}}))
    await until(lambda: bool(wire.sent_of("calling.dial")))
    call = host.calls["c1"]
    host.lose_session("session_lost")
    assert call.state == "ended" and call.end_reason == "session_lost" and not host.calls
    for waiting in (dialing, message.wait(1)):
        with pytest.raises(RelayError) as lost:
            await asyncio.wait_for(waiting, 5)
        assert lost.value.failure == "session_lost"
