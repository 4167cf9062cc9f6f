"""Faults injected by the emulator: drops, server disconnects, refused handshakes,
rejected auth, half-open sockets, queueing while disconnected, overload, malformed frames,
misbehaving handlers (§4, §6.2)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from relay_actors import Call, RelayClient, RelayError
from relay_actors.backoff import Backoff
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until
from relay_actors.errors import AuthenticationError

from .conftest import PHONE, SLOW, Harness, client_kwargs, start_serving


def resumed(client: RelayClient, count: int = 1) -> bool:
    stats = client.stats()
    return client.connected and stats["resumes"] >= count


def connects(h: Harness) -> list[dict[str, Any]]:
    """The ``signalwire.connect`` params the client sent on its current protocol."""
    return h.requests("signalwire.connect")


# --- socket drops and server disconnects ---------------------------------------------------


async def test_drop_mid_call_and_mid_action_resumes(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    client = harness.client
    call = await harness.answered()
    protocol = client.relay_protocol
    play = await call.play_tts("long")
    waiter = asyncio.create_task(play.wait())
    assert harness.core.drop(protocol)
    await wait_until(lambda: resumed(client))
    assert client.relay_protocol == protocol
    resume = connects(harness)[-1]
    assert resume["protocol"] == protocol and resume["authorization_state"] == "***"
    restored = [f["result"] for f in harness.frames("out") if "session_restored" in f.get("result", {})]
    assert restored[-1]["session_restored"] is True
    # The authorization state it sent back was the valid one the server gave it.
    assert "invalid_authorization_states" not in harness.core.stats()["counters"]
    # The running action is still controllable; the pending wait() completes.
    assert (await play.volume(1.0))["code"] == "200"
    await play.stop()
    assert (await asyncio.wait_for(waiter, 5)).params["state"] == "finished"
    assert (await call.hangup())["code"] == "200"
    assert (await call.wait_for_ended(timeout=5)).params["end_reason"] == "hangup"


async def test_an_empty_authorization_state_never_overwrites_a_good_one(harness: Harness) -> None:
    client = harness.client
    session = client._conn.session  # type: ignore[union-attr]
    good = await wait_until(lambda: session.authorization_state)
    harness.core.push_event(
        client.relay_protocol, "signalwire.authorization.state", {"authorization_state": ""}
    )
    await wait_until(lambda: client.stats().get("signalwire.authorization.state") == 2)
    assert session.authorization_state == good
    harness.core.drop(client.relay_protocol)
    await wait_until(lambda: resumed(client))
    assert harness.requests("signalwire.connect")[-1]["authorization_state"] == "***"  # sent (masked here)
    assert "invalid_authorization_states" not in harness.core.stats()["counters"]  # and valid


async def test_events_emitted_while_dropped_arrive_after_resume(harness: Harness) -> None:
    client = harness.client
    call = await harness.answered()
    harness.core.set_config({"durations": {"play": 0.2}})
    play = await call.play_tts("short")
    harness.core.drop(client.relay_protocol)
    # The play finishes server-side while (or right after) the socket is down.
    event = await play.wait(timeout=5)
    assert event.params["state"] == "finished"
    await wait_until(lambda: resumed(client))


async def test_server_disconnect_without_restart_resumes(harness: Harness) -> None:
    client = harness.client
    call = await harness.answered()
    protocol = client.relay_protocol
    acked = await harness.core.disconnect(protocol, restart=False)
    assert acked
    await wait_until(lambda: resumed(client))
    assert client.relay_protocol == protocol
    action = await call.play_tts("after")
    assert (await action.wait(timeout=5)).params["state"] == "finished"


async def test_server_restart_starts_a_fresh_session(harness: Harness) -> None:
    client = harness.client
    call = await harness.answered()
    await client.receive(["runtime"])
    old = client.relay_protocol
    harness.core.set_config({"durations": {"ring": 30.0}})
    dial = asyncio.create_task(client.dial([[PHONE]], dial_timeout=30))
    await harness.wait_request("calling.dial")
    assert await harness.core.disconnect(old, restart=True)
    await wait_until(lambda: client.connected and client.relay_protocol not in ("", old))
    fresh = connects(harness)[-1]
    assert "protocol" not in fresh and "authorization_state" not in fresh
    assert set(fresh["contexts"]) == {"office", "runtime"}
    # The old session's calls are over (the server ends them as it retires the session).
    await call.wait_for_ended(timeout=5)
    assert call.state == "ended" and client.stats()["active_calls"] == 0
    # A dial of the old session cannot complete any more: it fails instead of hanging.
    with pytest.raises(RelayError) as info:
        await asyncio.wait_for(dial, 5)
    assert info.value.failure == "session_lost"
    # Runtime-received contexts are still subscribed on the fresh session.
    new_call = await harness.inbound("runtime")
    assert new_call.context == "runtime"
    assert (await new_call.answer())["code"] == "200"


async def test_refused_resume_starts_fresh_and_ends_old_calls_locally(harness: Harness) -> None:
    client = harness.client
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    play = await call.play_tts("long")
    old = client.relay_protocol
    harness.core.refuse_handshakes = 10_000
    harness.core.drop(old)
    await wait_until(lambda: not client.connected)
    harness.core.retire(harness.core.session(old))  # expired while we were away
    harness.core.refuse_handshakes = 0
    await wait_until(lambda: client.connected and client.relay_protocol not in ("", old))
    assert client.stats()["reconnects"] >= 1 and client.stats()["resumes"] == 0
    # Nothing from the server says so: the client ends the lost calls and their actions itself.
    ended = await call.wait_for_ended(timeout=5)
    assert ended.params["end_reason"] == "session_lost" and call.state == "ended"
    assert (await play.wait(timeout=5)) is ended
    assert client.stats()["active_calls"] == 0
    assert (await harness.answered()).state == "answered"


@pytest.mark.parametrize("context", [None, "office"])
async def test_message_in_flight_across_a_restart(harness: Harness, context: str | None) -> None:
    """Sent on the old protocol: it fails (nobody will report on it). Sent on a context
    the new session receives too: it is still tracked to its end."""
    client = harness.client
    harness.core.set_config({"durations": {"message": 0.2}})
    message = await client.send_message(to_number="+1555", from_number="+1556", body="x", context=context)
    old = client.relay_protocol
    assert await harness.core.disconnect(old, restart=True)
    await wait_until(lambda: client.connected and client.relay_protocol not in ("", old))
    if context is None:
        with pytest.raises(RelayError) as info:
            await message.wait(timeout=5)
        assert info.value.failure == "session_lost"
    else:
        assert (await message.wait(timeout=5)).params["message_state"] == "delivered"
    assert client.stats()["tracked_messages"] == 0


# --- reconnect backoff and authentication ---------------------------------------------------


async def test_refused_handshakes_back_off_exponentially(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backoff = Backoff(initial=0.1, cap=1.0)
    h: Harness = await make_harness(backoff=backoff)
    refusals = 5
    h.core.refuse_handshakes = refusals
    caplog.set_level(logging.INFO, logger="relay_actors.connection")
    h.core.drop(h.protocol)
    await wait_until(lambda: resumed(h.client), timeout=10)
    assert h.core.stats()["counters"]["handshakes_refused"] == refusals
    records = [r for r in caplog.records if r.name == "relay_actors.connection"]
    lost = next(r.created for r in records if r.getMessage().startswith("connection to"))
    failures = [r.created for r in records if r.getMessage().startswith("cannot reach")]
    success = next(r.created for r in records if r.getMessage().startswith("connected to"))
    assert len(failures) == refusals
    attempts = [lost, *failures, success]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    nominal = [min(1.0, 0.1 * 2**i) for i in range(refusals + 1)]  # 0.1 0.2 0.4 0.8 1.0 1.0
    for gap, expected in zip(gaps, nominal, strict=True):
        # Jitter takes up to 25% off the nominal delay, never adds; allow scheduling slack.
        assert expected * 0.75 - 0.01 <= gap <= expected + 0.2, (gaps, nominal)
    assert gaps[3] > gaps[1]  # grows until the cap
    assert backoff.attempts == 0  # reset after the successful authentication


async def test_auth_rejected_three_times_serve_raises(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator, token="wrong-token"))
    with pytest.raises(AuthenticationError) as info:
        await asyncio.wait_for(client.serve(asyncio.Event()), 10)
    assert info.value.code == -32000
    assert emulator.core.stats()["counters"]["auth_failures"] == 3
    assert not client.connected


async def test_auth_rejected_three_times_run_exits_with_one_line(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    client = RelayClient(**client_kwargs(emulator, token="wrong-token"))
    codes: list[Any] = []

    def run() -> None:
        # SystemExit must stay in this thread: raised through the event loop it would stop it.
        try:
            client.run()
        except SystemExit as exc:
            codes.append(exc.code)

    # run() is blocking (asyncio.run): drive it from a thread, against our loop's emulator.
    await asyncio.wait_for(asyncio.to_thread(run), 10)
    assert codes == [1]
    assert emulator.core.stats()["counters"]["auth_failures"] == 3
    err = capsys.readouterr().err.strip().splitlines()
    # The credentials were arguments here: the line says so (the environment is not where they came from).
    assert err[-1].startswith("relay-actors: ") and "the token= argument" in err[-1]
    assert "wrong-token" not in err[-1] and "SIGNALWIRE_API_TOKEN" not in err[-1]


async def test_refused_handshakes_do_not_count_toward_the_auth_cap(emulator: Emulator) -> None:
    emulator.core.refuse_handshakes = 4
    client = RelayClient(**client_kwargs(emulator, backoff=Backoff(initial=0.01, cap=0.05)))
    stop, server = await start_serving(client)
    assert client.connected and not server.done()
    assert emulator.core.stats()["counters"]["handshakes_refused"] == 4
    stop.set()
    await asyncio.wait_for(server, 5)


async def test_connect_rejected_raises_at_once(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator, token="wrong-token"))
    with pytest.raises(AuthenticationError):
        await client.connect()
    await client.disconnect()
    assert emulator.core.stats()["counters"]["auth_failures"] == 1


async def test_rejection_after_first_success_is_retried(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator))
    stop, server = await start_serving(client)
    old = client.relay_protocol
    tokens = emulator.core.credentials.tokens
    saved = set(tokens[emulator.project])
    tokens[emulator.project] = {"rotated"}  # every connect is rejected for a while
    emulator.core.drop(old)
    await wait_until(lambda: emulator.core.stats()["counters"].get("auth_failures", 0) >= 5, timeout=10)
    assert not server.done()  # not given up: the cap applies before the first success only
    tokens[emulator.project] = saved
    await wait_until(lambda: client.connected, timeout=10)
    assert client.relay_protocol != old  # the resume was refused: a fresh session
    stop.set()
    await asyncio.wait_for(server, 5)


# --- half-open sockets --------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["answer_pings", "silent"])
async def test_half_open_socket_forces_a_reconnect(make_harness: Any, fault: str) -> None:
    """The server stops answering pings, or goes silent altogether, on an open socket."""
    h: Harness = await make_harness(ping_interval=0.1, request_timeout=0.3)
    call = await h.answered()
    protocol = h.protocol
    broken = fault == "silent"
    h.core.set_half_open(protocol, **{fault: broken})
    await wait_until(lambda: h.client.stats()["reconnects"] >= 1, timeout=5)
    h.core.set_half_open(protocol, **{fault: not broken})
    await wait_until(lambda: resumed(h.client), timeout=5)
    assert h.client.relay_protocol == protocol
    assert (await call.hangup())["code"] == "200"


async def test_unanswered_connect_times_out_and_is_retried(make_harness: Any) -> None:
    h: Harness = await make_harness(request_timeout=0.3)
    protocol = h.protocol
    h.core.set_half_open(protocol, silent=True)  # the resume's connect will get no answer
    h.core.drop(protocol)
    await wait_until(lambda: h.client.stats()["attempts"] >= 3, timeout=5)
    assert not h.client.connected
    h.core.set_half_open(protocol, silent=False)
    await wait_until(lambda: resumed(h.client), timeout=5)
    assert h.client.relay_protocol == protocol


async def test_server_pings_are_answered(harness: Harness) -> None:
    harness.core.set_config({"ping_interval": 0.05})
    await wait_until(lambda: harness.client.stats().get("server_pings", 0) >= 2, timeout=5)
    ping_ids = {f["id"] for f in harness.frames("out") if f.get("method") == "signalwire.ping" and "id" in f}
    await wait_until(lambda: ping_ids <= {f.get("id") for f in harness.frames("in")})


# --- requests while disconnected -------------------------------------------------------------


async def test_requests_queue_while_disconnected_and_flush_after_reauth(harness: Harness) -> None:
    client = harness.client
    protocol = client.relay_protocol
    harness.core.refuse_handshakes = 10_000
    harness.core.drop(protocol)
    await wait_until(lambda: not client.connected)
    pending = [
        asyncio.create_task(client.execute("signalwire.receive", {"contexts": [f"q{i}"]})) for i in range(500)
    ]
    await wait_until(lambda: client.stats()["queued"] == 500)
    with pytest.raises(RelayError) as info:
        await client.execute("signalwire.receive", {"contexts": ["one-too-many"]})
    assert info.value.failure == "queue_full"
    assert not any(task.done() for task in pending)
    harness.core.refuse_handshakes = 0
    results = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert all(r["code"] == "200" for r in results)
    # Flushed in order, after the resume's connect.
    frames = harness.frames("in", protocol)
    resume_at = max(i for i, f in enumerate(frames) if f.get("method") == "signalwire.connect")
    flushed = [
        (i, f["params"]["contexts"][0])
        for i, f in enumerate(frames)
        if f.get("method") == "signalwire.receive"
    ]
    assert [name for _, name in flushed] == [f"q{i}" for i in range(500)]
    assert all(i > resume_at for i, _ in flushed)
    assert client.stats()["queued"] == 0


async def test_dial_in_flight_across_a_drop_still_resolves(harness: Harness) -> None:
    client = harness.client
    harness.core.set_config({"durations": {"ring": 0.3}})
    harness.core.set_faults(client.relay_protocol, {"drop_responses": 1})  # the dial's answer is lost
    dial = asyncio.create_task(client.dial([[PHONE]], tag="across", dial_timeout=10))
    await harness.wait_request("calling.dial", tag="across")
    harness.core.drop(client.relay_protocol)
    call = await asyncio.wait_for(dial, 10)
    assert call.state == "answered" and call.tag == "across"
    assert client.stats()["resumes"] >= 1
    assert (await call.hangup())["code"] == "200"


# --- overload --------------------------------------------------------------------------------


async def test_burst_over_max_active_calls_is_dropped(make_harness: Any) -> None:
    h: Harness = await make_harness(max_active_calls=3)
    h.core.inject_calls("office", 9)
    await wait_until(lambda: h.client.stats().get("offers") == 9)
    stats = h.client.stats()
    assert stats["active_calls"] == 3 and stats["offers_dropped"] == 6 and h.calls.qsize() == 3
    assert not h.requests("calling.pass")
    # Slots freed by ended calls are reused.
    for _ in range(3):
        h.core.hangup((await h.calls.get()).call_id)
    await wait_until(lambda: h.client.stats()["active_calls"] == 0)
    h.core.inject_calls("office", 3)
    await wait_until(lambda: h.calls.qsize() == 3)
    assert h.client.stats()["offers_dropped"] == 6


async def test_burst_over_max_active_calls_is_passed(make_harness: Any) -> None:
    h: Harness = await make_harness(max_active_calls=2, over_limit="pass")
    ids = h.core.inject_calls("office", 6)
    await wait_until(lambda: len(h.requests("calling.pass")) == 4)
    stats = h.client.stats()
    assert stats["active_calls"] == 2 and stats["offers_passed"] == 4
    passed = {p["call_id"] for p in h.requests("calling.pass")}
    handled = {(await h.calls.get()).call_id for _ in range(2)}
    assert passed | handled == set(ids) and not passed & handled


async def test_offers_without_a_call_id_or_redelivered(harness: Harness) -> None:
    client = harness.client
    offer = {"call_state": "created", "context": "office", "direction": "inbound"}
    harness.core.push_event(harness.protocol, "calling.call.receive", offer)  # no call_id
    call = await harness.inbound()
    # The same offer again (a new event id, as after a server-side retry): handled once.
    harness.core.push_event(harness.protocol, "calling.call.receive", {**offer, "call_id": call.call_id})
    await wait_until(lambda: client.stats()["offers"] == 3)
    assert client.stats()["offers_invalid"] == 1 and client.stats()["active_calls"] == 1
    assert harness.calls.empty()


async def test_an_offer_without_a_handler_is_tracked_and_logged(
    emulator: Emulator, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()  # no on_call registered
    (call_id,) = emulator.core.inject_calls("office", 1)
    await wait_until(lambda: client.stats().get("offers") == 1)
    assert client.stats()["active_calls"] == 1 and "no on_call handler" in caplog.text
    emulator.core.hangup(call_id)
    await wait_until(lambda: client.stats()["active_calls"] == 0)


# --- malformed frames -------------------------------------------------------------------------


def _event(params: Any, event_type: str = "calling.call.play", frame_id: str = "sw-bad-1") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": frame_id,
        "method": "signalwire.event",
        "params": {"event_type": event_type, "params": params},
    }


async def test_malformed_frames_are_counted_and_survived(harness: Harness) -> None:
    client = harness.client
    protocol = client.relay_protocol
    bad: list[Any] = [
        _event(None, frame_id="sw-bad-1"),
        _event([1, 2], frame_id="sw-bad-2"),
        _event("text", frame_id="sw-bad-3"),
        {"jsonrpc": "2.0", "id": "sw-bad-4", "method": "signalwire.event", "params": [1]},
        "this is not json {",
        "[1, 2, 3]",
        _event({"call_id": "nobody"}, event_type="calling.call.bogus", frame_id="sw-bad-5"),
        {"jsonrpc": "2.0", "id": "no-such-request", "result": {}},
        {"jsonrpc": "2.0", "id": "no-such-request-2", "error": {"code": -1, "message": "x"}},
        {"jsonrpc": "2.0", "id": "sw-bad-6", "method": "signalwire.whatever", "params": {}},
    ]
    for frame in bad:
        harness.core.push_raw(protocol, frame)

    def counted() -> dict[str, int]:
        return {k: v for k, v in client.stats().items() if k.startswith("violation.")}

    expected = {
        "violation.invalid_params": 4,
        "violation.invalid_json": 1,
        "violation.not_an_object": 1,
        "violation.unknown_event": 1,
        "violation.unknown_response": 2,
        "violation.unknown_method": 1,
    }
    await wait_until(lambda: counted() == expected)
    assert client.connected and client.relay_protocol == protocol and client.stats()["reconnects"] == 0
    # Every server request with an id was answered (acks), so the server is not left waiting.
    answered = {"sw-bad-1", "sw-bad-2", "sw-bad-3", "sw-bad-4", "sw-bad-5", "sw-bad-6"}
    await wait_until(lambda: answered <= {f.get("id") for f in harness.frames("in")})
    # And the next call works.
    call = await harness.answered()
    assert (await (await call.play_tts("ok")).wait(timeout=5)).params["state"] == "finished"


async def test_oversize_frame_closes_the_socket_and_the_session_resumes(harness: Harness) -> None:
    client = harness.client
    call = await harness.answered()
    protocol = client.relay_protocol
    huge = _event({"call_id": call.call_id, "blob": "x" * (10 * 1024 * 1024 + 1)}, frame_id="sw-huge")
    harness.core.push_raw(protocol, huge)
    await wait_until(lambda: resumed(client), timeout=10)
    assert client.relay_protocol == protocol
    assert (await call.hangup())["code"] == "200"


# --- handlers ---------------------------------------------------------------------------------


async def test_handler_exception_kept_ends_only_that_handler(make_harness: Any) -> None:
    harness = await make_harness(on_handler_error="keep")
    client = harness.client
    served: list[str] = []

    @client.on_call
    async def handler(call: Call) -> None:
        await call.answer()
        if not served:
            served.append("boom")
            raise RuntimeError("handler bug")
        served.append(call.call_id)
        await (await call.play_tts("fine")).wait(timeout=5)
        await call.hangup()

    first, second = harness.core.inject_calls("office", 2)
    await wait_until(lambda: harness.requests("calling.end", call_id=second))
    assert client.stats()["handler_errors"] == 1 and served == ["boom", second]
    # "keep": the failed handler's call is untouched (still up, still tracked), the client still connected.
    assert harness.core.calls.calls[first].state == "answered" and client.connected
    assert first in client._host.calls


async def test_handler_timeout_hangs_the_call_up(make_harness: Any) -> None:
    h: Harness = await make_harness(handler_timeout=0.2)
    started = asyncio.Event()

    @h.client.on_call
    async def stuck(call: Call) -> None:
        await call.answer()
        started.set()
        await asyncio.Event().wait()

    (call_id,) = h.core.inject_calls("office", 1)
    await asyncio.wait_for(started.wait(), 5)
    end = await h.wait_request("calling.end", call_id=call_id)
    assert end["reason"] == "error"
    await wait_until(lambda: h.core.calls.calls[call_id].state == "ended")
    assert h.client.stats()["handler_timeouts"] == 1
    await wait_until(lambda: h.client.stats()["active_calls"] == 0)


# --- duplicates, reordering, gaps, strays -------------------------------------------------------


@pytest.mark.parametrize("fault", ["duplicate_events", "reorder_events"])
async def test_duplicated_or_reordered_events_resolve_once(harness: Harness, fault: str) -> None:
    call = await harness.answered()
    harness.core.set_faults(harness.protocol, {fault: True})
    completions: list[str] = []
    states: list[str] = []
    call.on("calling.call.record", lambda ev: states.append(ev.params["state"]))
    record = await call.record(on_completed=lambda ev: completions.append(ev.params["state"]))
    collect = await call.prompt_tts("Press", {"digits": {"max": 4}})
    await wait_until(lambda: not harness.core.calls.calls[call.call_id].actions)  # both done server-side
    # The reorder fault holds an odd event back until the next one: send one more.
    harness.core.push_event(harness.protocol, "calling.call.hold", {"call_id": call.call_id, "state": "hold"})
    assert (await collect.wait(timeout=5)).params["result"]["type"] == "digit"
    assert (await record.wait(timeout=5)).params["state"] == "finished"
    harness.core.set_faults(harness.protocol, {fault: False})
    await call.hangup()
    await call.wait_for_ended(timeout=5)
    assert completions == ["finished"]
    assert sorted(states) == ["finished", "recording"]  # each event once, whatever the order
    if fault == "duplicate_events":
        assert harness.client.stats()["duplicate_events"] > 0


async def test_lost_terminal_event_does_not_hang_the_action(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    play = await call.play_tts("long")
    harness.core.calls.calls[call.call_id].actions.clear()  # its "finished" will never be sent
    harness.core.hangup(call.call_id)
    event = await play.wait(timeout=5)
    assert event.event_type == "calling.call.state" and event.params["call_state"] == "ended"


async def test_events_for_unknown_calls_are_dropped(harness: Harness) -> None:
    harness.core.push_event(harness.protocol, "calling.call.play", {"call_id": "nobody", "control_id": "x"})
    harness.core.push_event(
        harness.protocol, "calling.call.state", {"call_id": "nobody", "call_state": "ended"}
    )
    await wait_until(lambda: harness.client.stats().get("events_unroutable") == 2)
    assert harness.client.connected and harness.client.stats()["active_calls"] == 0


async def test_a_transfers_far_leg_is_no_unroutable_event(harness: Harness) -> None:
    """The legs a ``connect`` rings report their states on the subscription too: counted as
    other legs, not as unroutable events (which an operator reads as errors)."""
    call = await harness.answered()
    await call.connect([[{"type": "phone", "params": {"to_number": "+15550100099", "from_number": "+1555"}}]])
    await call.wait_for(
        "calling.call.connect", lambda e: e.params.get("connect_state") == "connected", timeout=10
    )
    harness.core.hangup(call.call_id)  # the caller hangs up: the far leg ends too
    await call.wait_for_ended()
    await wait_until(lambda: harness.client.stats().get("events_other_legs", 0) >= 3)  # created..ended
    assert harness.client.stats().get("events_unroutable", 0) == 0, harness.client.stats()


async def test_unanswered_request_times_out_and_forces_a_reconnect(make_harness: Any) -> None:
    h: Harness = await make_harness(request_timeout=0.3)
    call = await h.answered()
    protocol = h.protocol
    h.core.set_faults(protocol, {"drop_responses": 1})
    with pytest.raises(RelayError) as info:
        await call.hold()
    assert info.value.failure == "timeout"
    await wait_until(lambda: resumed(h.client))
    assert h.client.relay_protocol == protocol and (await call.unhold())["code"] == "200"


async def test_disconnect_cancels_handlers_and_ends_calls_locally(harness: Harness) -> None:
    client = harness.client
    cancelled = asyncio.Event()
    started = asyncio.Event()
    calls: list[Call] = []

    @client.on_call
    async def handler(call: Call) -> None:
        calls.append(call)
        await call.answer()
        started.set()
        try:
            await call.wait_for("calling.call.play")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    harness.core.inject_calls("office", 1)
    await asyncio.wait_for(started.wait(), 5)
    await client.disconnect()
    assert cancelled.is_set()
    assert calls[0].state == "ended" and calls[0].end_reason == "closed"
