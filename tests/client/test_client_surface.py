"""The RelayClient surface (§9.1): configuration, auth modes, lifecycle, contexts,
raw requests, dialing, messaging, and TLS, against the emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from relay_actors import RelayClient, RelayError
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until
from relay_actors.errors import ConfigError
from relay_actors.message import Message

from .conftest import PHONE, Harness, client_kwargs, phone, start_serving

# --- configuration -----------------------------------------------------------------------


async def test_env_fallbacks_connect(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", emulator.project)
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", emulator.token)
    monkeypatch.setenv("SIGNALWIRE_SPACE", emulator.host)
    monkeypatch.setenv("SIGNALWIRE_RELAY_SCHEME", "ws")
    async with RelayClient(contexts=["office"]) as client:
        assert client.project == emulator.project and client.host == emulator.host
        assert client.connected and client.relay_protocol in {
            s["protocol"] for s in emulator.core.list_sessions()
        }


async def test_arguments_win_over_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", "env-project")
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", "env-token")
    monkeypatch.setenv("SIGNALWIRE_SPACE", "env.example.com")
    async with RelayClient(**client_kwargs(emulator)) as client:
        assert client.project == emulator.project and client.host == emulator.host and client.connected


async def test_jwt_from_env_and_argument(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = client_kwargs(emulator, project=None, token=None)
    async with RelayClient(**kw, jwt_token=emulator.jwt) as client:
        assert client.connected
    monkeypatch.setenv("SIGNALWIRE_JWT_TOKEN", emulator.jwt)
    async with RelayClient(**kw) as client:
        assert client.connected
    journal = emulator.core.journal.frames()
    auths = [
        e["frame"]["params"]["authentication"]
        for frames in journal.values()
        for e in frames
        if e["frame"].get("method") == "signalwire.connect"
    ]
    assert auths == [{"jwt_token": "***"}, {"jwt_token": "***"}]  # JWT only, no project/token


async def test_bad_jwt_is_rejected(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator, project=None, token=None), jwt_token=emulator.jwt + "x")
    with pytest.raises(RelayError) as info:
        await client.connect()
    await client.disconnect()
    assert info.value.code == -32000


@pytest.mark.parametrize(
    ("env", "kwargs", "names"),
    [
        ({}, {}, ("project=", "SIGNALWIRE_PROJECT_ID", "SIGNALWIRE_JWT_TOKEN")),
        ({"SIGNALWIRE_PROJECT_ID": "p"}, {}, ("token=", "SIGNALWIRE_API_TOKEN")),
        ({}, {"project": "p"}, ("token=", "SIGNALWIRE_API_TOKEN")),
        ({}, {"project": "p", "token": "t", "host": "https://x.example.com"}, ("host=", "SIGNALWIRE_SPACE")),
        ({"SIGNALWIRE_SPACE": "a b"}, {"project": "p", "token": "t"}, ("host=", "SIGNALWIRE_SPACE")),
        ({}, {"project": "p", "token": "t", "host": "x.example.com:99999"}, ("host=", "SIGNALWIRE_SPACE")),
        (
            {},
            {"project": "p", "token": "t", "max_active_calls": 0},
            ("max_active_calls=", "RELAY_MAX_ACTIVE_CALLS"),
        ),
        (
            {},
            {"project": "p", "token": "t", "max_active_calls": "5"},
            ("max_active_calls=", "RELAY_MAX_ACTIVE_CALLS"),
        ),
        (
            {},
            {"project": "p", "token": "t", "ca_file": "/nonexistent.pem"},
            ("ca_file=", "SIGNALWIRE_RELAY_CA_FILE"),
        ),
        ({}, {"project": "p", "token": "t", "scheme": "http"}, ("scheme=", "SIGNALWIRE_RELAY_SCHEME")),
        ({"SIGNALWIRE_RELAY_SCHEME": "tcp"}, {"project": "p", "token": "t"}, ("SIGNALWIRE_RELAY_SCHEME",)),
        (
            {"SIGNALWIRE_RELAY_CA_FILE": "/nonexistent.pem"},
            {"project": "p", "token": "t"},
            ("SIGNALWIRE_RELAY_CA_FILE",),
        ),
    ],
)
def test_config_errors_name_argument_and_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, Any], names: tuple[str, ...]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError) as info:
        RelayClient(**kwargs)
    assert isinstance(info.value, ConfigError)
    for name in names:
        assert name in str(info.value)


def test_bad_over_limit_and_contexts() -> None:
    with pytest.raises(ValueError, match="over_limit"):
        RelayClient(project="p", token="t", over_limit="queue")
    with pytest.raises(ValueError, match="contexts"):
        RelayClient(project="p", token="t", contexts="office")  # type: ignore[arg-type]


async def test_max_active_calls_from_env(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, make_harness: Any
) -> None:
    monkeypatch.setenv("RELAY_MAX_ACTIVE_CALLS", "2")
    h: Harness = await make_harness()
    emulator.core.inject_calls("office", 3)
    await wait_until(lambda: h.client.stats().get("offers") == 3)
    stats = h.client.stats()
    assert stats["active_calls"] == 2 and stats["offers_dropped"] == 1


async def test_max_active_calls_bad_env_falls_back(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RELAY_MAX_ACTIVE_CALLS", "lots")
    h: Harness = await make_harness()
    assert "RELAY_MAX_ACTIVE_CALLS" in caplog.text
    emulator.core.inject_calls("office", 5)
    await wait_until(lambda: h.client.stats().get("offers") == 5)
    assert h.client.stats()["active_calls"] == 5 and "offers_dropped" not in h.client.stats()


async def test_ca_file_from_env(tls_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_emulator.ca_file is not None
    monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", tls_emulator.ca_file)
    kw = client_kwargs(tls_emulator, ca_file=None)
    async with RelayClient(**kw) as client:
        assert client.connected and client.relay_protocol


async def test_public_surface(make_client: Any) -> None:
    client: RelayClient = await make_client(max_active_calls=5)
    assert client.relay_protocol.startswith("signalwire_")
    with pytest.raises(AttributeError):
        client.relay_protocol = "x"  # type: ignore[misc]
    assert not hasattr(client, "max_active_calls")
    assert client.contexts == ["office"]
    with pytest.raises(ValueError):
        client.on_call("not callable")  # type: ignore[arg-type]
    await client.disconnect()
    assert not client.connected and "connected=False" in repr(client)


# --- lifecycle ---------------------------------------------------------------------------


async def test_async_with_connects_and_disconnects(emulator: Emulator) -> None:
    async with RelayClient(**client_kwargs(emulator)) as client:
        assert client.connected
        protocol = client.relay_protocol
        assert emulator.core.session(protocol).attached
    assert not client.connected
    await wait_until(lambda: not emulator.core.session(protocol).attached)


async def test_connect_twice_keeps_the_one_socket(harness: Harness) -> None:
    client = harness.client
    protocol = client.relay_protocol
    call = await harness.answered()
    await client.connect()
    await client.connect()
    # Still the first socket: no takeover, no drop, no resume.
    assert client.relay_protocol == protocol and client.connected
    assert len(harness.requests("signalwire.connect")) == 1
    assert (await call.hangup())["code"] == "200"
    stats = client.stats()
    assert stats["reconnects"] == 0 and stats["resumes"] == 0
    counters = harness.core.stats()["counters"]
    assert counters["connects"] == 1 and "resumes" not in counters


async def test_reconnect_after_disconnect(make_harness: Any) -> None:
    h: Harness = await make_harness(connect=False)
    client = h.client
    early = asyncio.create_task(client.receive(["early"]))  # before any connect: queued
    await wait_until(lambda: client.stats().get("queued") == 1)
    await client.connect()
    await asyncio.wait_for(early, 5)  # flushed after the connect
    first = client.relay_protocol
    assert client.contexts == ["office", "early"]
    await client.disconnect()
    await client.connect()  # a new session, as after any disconnect
    assert client.connected and client.relay_protocol not in ("", first)
    assert (await h.inbound()).state == "created"


async def test_serve_stops_on_event(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator))
    stop, server = await start_serving(client)
    protocol = client.relay_protocol
    stop.set()
    await asyncio.wait_for(server, 5)
    assert server.exception() is None and not client.connected
    await wait_until(lambda: not emulator.core.session(protocol).attached)


async def test_disconnect_fails_pending_work(harness: Harness) -> None:
    harness.core.set_config({"durations": {"ring": 30.0}})
    dial = asyncio.create_task(harness.client.dial([[PHONE]], dial_timeout=30))
    await harness.wait_request("calling.dial")
    await harness.client.disconnect()
    with pytest.raises(RelayError) as info:
        await asyncio.wait_for(dial, 5)
    assert info.value.failure == "closed"


async def test_disconnect_fails_tracked_messages(harness: Harness) -> None:
    harness.core.set_config({"durations": {"message": 30.0}})
    message = await harness.client.send_message(to_number="+1555", from_number="+1556", body="x")
    await harness.client.disconnect()
    with pytest.raises(RelayError) as info:
        await message.wait(timeout=5)
    assert info.value.failure == "closed" and message.is_done


async def test_run_stops_on_sigterm(emulator: Emulator) -> None:
    """``run()`` in a real process: serves until SIGTERM, then exits cleanly."""
    script = textwrap.dedent(
        """
        from relay_actors import RelayClient
        client = RelayClient(contexts=["office"])
        client.run()
        print("stopped", flush=True)
        """
    )
    env = {
        **os.environ,
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE": emulator.host,
        "SIGNALWIRE_RELAY_SCHEME": "ws",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        await wait_until(lambda: emulator.core.stats()["sessions_attached"] == 1, timeout=20)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "stopped"
    await wait_until(lambda: emulator.core.stats()["sessions_attached"] == 0)


# --- contexts and raw requests ------------------------------------------------------------


async def test_receive_and_unreceive(harness: Harness) -> None:
    client = harness.client
    await client.receive(["sales", "sales"])
    assert harness.request("signalwire.receive") == {"contexts": ["sales"]}
    assert client.contexts == ["office", "sales"]
    call = await harness.inbound("sales")
    assert call.context == "sales"
    await client.unreceive("sales")
    assert harness.request("signalwire.unreceive") == {"contexts": ["sales"]}
    assert client.contexts == ["office"]
    (call_id,) = harness.core.inject_calls("sales", 1)
    # Nobody receives "sales" any more: the emulator ends the offer at once, unseen by us.
    assert harness.core.calls.calls[call_id].end_reason == "not_found"
    assert harness.calls.empty()


async def test_receive_402(harness: Harness) -> None:
    harness.core.set_config({"receive_402": ["paid"]})
    with pytest.raises(RelayError) as info:
        await harness.client.receive(["paid"])
    assert info.value.code == 402 and info.value.failure is None
    assert "paid" not in harness.client.contexts


async def test_execute_raw(harness: Harness) -> None:
    call = await harness.inbound()
    result = await harness.client.execute(
        "calling.answer", {"call_id": call.call_id, "node_id": call.node_id}
    )
    assert result["code"] == "200"
    await call.wait_for_answered(timeout=5)
    with pytest.raises(RelayError) as info:
        await harness.client.execute("nosuch.method", {})
    assert info.value.code == -32601
    with pytest.raises(ValueError):
        await harness.client.execute("", {})
    with pytest.raises(ValueError):
        await harness.client.execute("calling.answer", ["x"])  # type: ignore[arg-type]


# --- dialing ------------------------------------------------------------------------------


async def test_dial_parallel(harness: Harness) -> None:
    harness.core.set_config({"dial_outcomes": {"+1002": "no-answer"}})
    call = await harness.client.dial(
        [phone("+1002"), phone("+1001")], tag="par", max_duration=60, dial_timeout=5
    )
    sent = harness.request("calling.dial", tag="par")
    assert sent["devices"] == [[phone("+1002"), phone("+1001")]] and sent["max_duration"] == 60
    assert call.to_number == "+1001" and call.state == "answered" and call.tag == "par"
    legs = [c for c in harness.core.list_calls() if c["tag"] == "par"]
    assert len(legs) == 2
    assert harness.client.stats()["pending_dials"] == 0


async def test_dial_serial(harness: Harness) -> None:
    harness.core.set_config({"dial_outcomes": {"+1003": "busy"}})
    call = await harness.client.dial([[phone("+1003")], [phone("+1004")]], dial_timeout=5)
    assert call.to_number == "+1004"
    sent = harness.requests("calling.dial")[-1]
    assert sent["devices"] == [[phone("+1003")], [phone("+1004")]]


async def test_dial_failed(harness: Harness) -> None:
    harness.core.set_config({"dial_outcomes": {"+1005": "busy", "+1006": "failure"}})
    with pytest.raises(RelayError) as info:
        await harness.client.dial([[phone("+1005"), phone("+1006")]], dial_timeout=5)
    assert info.value.failure == "dial_failed"
    assert harness.client.stats()["pending_dials"] == 0
    assert harness.client.stats()["active_calls"] == 0  # the failed legs ended


async def test_dial_timeout_hangs_up_the_legs(harness: Harness) -> None:
    harness.core.set_config({"durations": {"answer": 30.0}})
    with pytest.raises(RelayError) as info:
        await harness.client.dial([[PHONE]], tag="slow", dial_timeout=0.3)
    assert info.value.failure == "dial_timeout"
    # The leg that was ringing is cancelled, not orphaned.
    end = await harness.wait_request("calling.end")
    assert end["reason"] == "cancel"
    await wait_until(
        lambda: all(c["state"] == "ended" for c in harness.core.list_calls() if c["tag"] == "slow")
    )
    with pytest.raises(ValueError):
        await harness.client.dial([], dial_timeout=1)


async def test_serial_dial_timeout_leaves_no_orphan(harness: Harness) -> None:
    """The dial times out during the first group; the server then rings the next one,
    whose leg would be answered and left up if nobody ended it."""
    harness.core.set_config({"durations": {"ring": 0.2, "answer": 0.2}})
    with pytest.raises(RelayError) as info:
        await harness.client.dial([[phone("+1001")], [phone("+1002")]], tag="ser", dial_timeout=0.3)
    assert info.value.failure == "dial_timeout"
    await wait_until(lambda: any(c["device"] == phone("+1002") for c in harness.core.list_calls()))
    await wait_until(
        lambda: all(c["state"] == "ended" for c in harness.core.list_calls() if c["tag"] == "ser")
    )
    assert {c["end_reason"] for c in harness.core.list_calls()} == {"cancel"}
    assert harness.client.stats()["dial_orphans_ended"] == 1


async def test_cancelled_dial_hangs_up_its_legs(harness: Harness) -> None:
    harness.core.set_config({"durations": {"answer": 30.0}})
    dial = asyncio.create_task(harness.client.dial([[PHONE]], tag="gone", dial_timeout=30))
    await wait_until(lambda: harness.core.list_calls(state="ringing"))
    dial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dial
    await wait_until(
        lambda: all(c["state"] == "ended" for c in harness.core.list_calls() if c["tag"] == "gone")
    )
    assert harness.client.stats()["pending_dials"] == 0


# --- messaging ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("delivered", ""),
        ("undelivered", "Destination unreachable"),
        ("failed", "Carrier rejected the message"),
    ],
)
async def test_send_message_outcomes(harness: Harness, outcome: str, reason: str) -> None:
    harness.core.set_config({"message_outcomes": {"+15550009999": outcome}})
    states: list[str] = []
    completed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    message = await harness.client.send_message(
        to_number="+15550009999",
        from_number="+15550000001",
        body="hi",
        tags=["t"],
        on_completed=completed.set_result,
    )
    message.on(lambda ev: states.append(ev.params["message_state"]))
    sent = harness.request("messaging.send")
    assert sent["context"] == harness.protocol and sent["body"] == "hi" and sent["tags"] == ["t"]
    final = await message.wait(timeout=5)
    assert final.params["message_state"] == outcome and message.state == outcome and message.reason == reason
    assert message.is_done and message.result is final and (await asyncio.wait_for(completed, 5)) is final
    assert states[-1] == outcome


async def test_message_states_before_send_result(harness: Harness) -> None:
    """The states beat the send result (the official SDK hangs here): wait() still resolves."""
    harness.core.set_config({"message_states_before_result": True})
    completed: list[Any] = []
    message = await harness.client.send_message(
        to_number="+15550009999",
        from_number="+15550000001",
        media=["https://m/1.png"],
        context="office",
        on_completed=completed.append,
    )
    out = harness.frames("out")
    kinds = [f.get("params", {}).get("event_type") or ("result" if "result" in f else "") for f in out]
    assert kinds.index("messaging.state") < len(kinds) - 1 - kinds[::-1].index("result")  # states first
    final = await message.wait(timeout=2)
    assert final.params["message_state"] == "delivered" and message.state == "delivered"
    assert completed == [final] and harness.client.stats()["tracked_messages"] == 0


async def test_send_message_bad_arguments(harness: Harness) -> None:
    with pytest.raises(ValueError):
        await harness.client.send_message(to_number="+1", from_number="+2")
    with pytest.raises(ValueError):
        await harness.client.send_message(to_number="", from_number="+2", body="x")


async def test_inbound_messages_and_a_failing_message_handler(harness: Harness) -> None:
    received: asyncio.Queue[Message] = asyncio.Queue()

    @harness.client.on_message
    async def on_message(message: Message) -> None:
        received.put_nowait(message)
        if message.body == "boom":
            raise RuntimeError("handler bug")

    harness.core.messaging.inject("office", body="boom")
    message_id = harness.core.messaging.inject("office", body="ping", from_number="+15557778888", media=["u"])
    assert (await asyncio.wait_for(received.get(), 5)).body == "boom"
    message = await asyncio.wait_for(received.get(), 5)
    assert message.message_id == message_id and message.body == "ping" and message.media == ["u"]
    assert message.direction == "inbound" and message.state == "received" and message.context == "office"
    assert message.from_number == "+15557778888"
    await wait_until(lambda: harness.client.stats().get("handler_errors") == 1)
    assert harness.client.connected


# --- TLS ------------------------------------------------------------------------------------


async def test_wss_with_generated_ca(tls_emulator: Emulator) -> None:
    async with RelayClient(**client_kwargs(tls_emulator)) as client:
        call = await client.dial([[PHONE]], dial_timeout=5)
        assert call.state == "answered"
        assert tls_emulator.url.startswith("wss://")


async def test_wss_with_wrong_ca_fails_verification(tls_emulator: Emulator) -> None:
    async with Emulator(tls=True) as other:  # its own, different CA
        client = RelayClient(**client_kwargs(tls_emulator, ca_file=other.ca_file))
        with pytest.raises(RelayError) as info:
            await client.connect()
        assert info.value.failure == "tls_untrusted" and "SIGNALWIRE_RELAY_CA_FILE" in info.value.message
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await client.disconnect()
    assert tls_emulator.core.stats()["sessions"] == 0
