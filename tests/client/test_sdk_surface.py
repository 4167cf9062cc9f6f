"""The official SDK's surface, name for name: what ``signalwire.relay`` 3.7.5 offers exists in
``relay_actors`` with the same names, values, fields and signatures, so an app moves over by
changing its import line. Checked programmatically against the installed SDK, with the
deliberate differences in explicit allow-lists (each one is a row of README's table
"Differences from the official SDK"); then one behavioural test per gap, against the emulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import logging
import pickle
import re
from collections.abc import Iterator
from typing import Any

import pytest

import relay_actors
from relay_actors import RelayClient, RelayError
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until

from .conftest import SLOW, Harness, client_kwargs

sdk = pytest.importorskip("signalwire.relay")
sdk_constants = importlib.import_module("signalwire.relay.constants")
sdk_event = importlib.import_module("signalwire.relay.event")
sdk_call = importlib.import_module("signalwire.relay.call")

# --- the allow-list of deliberate differences (README: "Differences from the official SDK") ----

#: Constants whose value is ours on purpose.
CONSTANT_VALUES_DIFFER = {
    "AGENT_STRING",  # the server is told which client it talks to: "relay-actors/0.1"
}

#: ``(class, attribute)`` of the SDK that we leave out on purpose.
MISSING_ON_PURPOSE = {
    # RELAY has no calling.play_and_collect.pause/resume; the SDK inherits them and sends them anyway.
    ("CollectAction", "pause"),
    ("CollectAction", "resume"),
}

#: Constructors that are not public API: calls and actions are made by the client, events by
#: ``parse_event``/``from_payload`` (events are read-only views of their params; see
#: ``test_event_fields_match_the_sdk``).
INTERNAL_CONSTRUCTORS = {"Call", "Action", "FaxAction"}

#: SDK names of ``signalwire.relay.call`` that live in ``relay_actors.action`` (the action
#: families); ``relay_actors.call`` is the Call alone.
ACTION_FAMILIES = {"StoppableAction", "PausableAction", "VolumeAction"}


def _public_classes(module: Any) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
    }


def _public_members(cls: type) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, Exception, BaseException):
            continue
        members.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
    return members


def _signature_gaps(name: str, theirs: Any, ours: Any) -> list[str]:
    """What a call written against ``theirs`` could pass that ``ours`` would not accept
    (a parameter name, kind or default the SDK has and we lack)."""
    try:
        s_sig, o_sig = inspect.signature(theirs), inspect.signature(ours)
    except (TypeError, ValueError):
        return []
    o_params = o_sig.parameters
    o_var_kw = any(p.kind is p.VAR_KEYWORD for p in o_params.values())
    o_var_pos = any(p.kind is p.VAR_POSITIONAL for p in o_params.values())
    gaps = []
    positional = [p for p in o_params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for index, p in enumerate(s_sig.parameters.values()):
        if p.kind is p.VAR_KEYWORD:
            if not o_var_kw:
                gaps.append(f"{name}: no **{p.name}")
            continue
        if p.kind is p.VAR_POSITIONAL:
            if not o_var_pos:
                gaps.append(f"{name}: no *{p.name}")
            continue
        mine = o_params.get(p.name)
        if mine is None:
            if not (p.kind is p.KEYWORD_ONLY and o_var_kw):
                gaps.append(f"{name}: parameter {p.name!r} missing (SDK {s_sig}, ours {o_sig})")
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and (
            index >= len(positional) or positional[index].name != p.name
        ):
            gaps.append(f"{name}: {p.name!r} is not at position {index} as in the SDK")
        if p.default is not p.empty and mine.default is p.empty:
            gaps.append(f"{name}: {p.name!r} is optional in the SDK, required here")
    for p in o_params.values():
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            if p.name not in s_sig.parameters:
                gaps.append(f"{name}: we require {p.name!r}, which the SDK does not have")
    return gaps


# --- names -----------------------------------------------------------------------------------


def test_every_top_level_name_of_the_sdk_is_exported() -> None:
    """``dir(signalwire.relay)`` (its ``__all__`` and its submodules ``call``, ``client``,
    ``constants``, ``event``, ``message``) is all in ``dir(relay_actors)``."""
    missing = [n for n in dir(sdk) if not n.startswith("_") and not hasattr(relay_actors, n)]
    assert missing == []
    assert {"call", "client", "constants", "event", "message"} <= set(dir(relay_actors))
    not_in_all = [n for n in sdk.__all__ if n not in relay_actors.__all__]
    assert not_in_all == []
    # Same kind of thing under each name: constants with the same values, classes as classes.
    for name in sdk.__all__:
        theirs, ours = getattr(sdk, name), getattr(relay_actors, name)
        if isinstance(theirs, str):
            assert ours == theirs, name
        else:
            assert inspect.isclass(ours) == inspect.isclass(theirs), name


def test_every_sdk_constant_exists_with_its_value() -> None:
    """``signalwire.relay.constants`` → ``relay_actors.constants``; the value constants are
    also at the top level (``from relay_actors import END_REASON_HANGUP``)."""
    from relay_actors import constants as ours

    names = [n for n in vars(sdk_constants) if n.isupper()]
    assert len(names) > 70  # the SDK really was read
    for name in names:
        assert hasattr(ours, name), name
        theirs, mine = getattr(sdk_constants, name), getattr(ours, name)
        if name in CONSTANT_VALUES_DIFFER:
            continue
        if isinstance(theirs, tuple):
            assert set(mine) == set(theirs), name  # a tuple there, a frozenset for some here
        else:
            assert mine == theirs, name
    for prefix in ("END_REASON_", "PLAY_STATE_", "RECORD_STATE_", "DETECT_TYPE_", "ROOM_STATE_"):
        group = [n for n in names if n.startswith(prefix)]
        assert group and all(getattr(relay_actors, n) == getattr(sdk_constants, n) for n in group), prefix


def test_sdk_submodules_have_their_counterparts() -> None:
    """``from signalwire.relay.<module> import X`` → ``from relay_actors.<module> import X``."""
    for module in ("call", "client", "message", "event"):
        theirs = importlib.import_module(f"signalwire.relay.{module}")
        ours = importlib.import_module(f"relay_actors.{module}")
        for name in _public_classes(theirs):
            home = relay_actors.action if name in ACTION_FAMILIES else ours
            assert hasattr(home, name), f"relay_actors.{module}.{name}"
    from relay_actors import event

    assert callable(event.parse_event)
    assert {k: v.__name__ for k, v in sdk_event.EVENT_CLASS_MAP.items()} == {
        k: event.EVENT_CLASS_MAP[k].__name__ for k in sdk_event.EVENT_CLASS_MAP
    }


# --- signatures ------------------------------------------------------------------------------


def _sdk_classes() -> Iterator[tuple[str, type, type]]:
    for name in sdk.__all__:
        theirs = getattr(sdk, name)
        if inspect.isclass(theirs) and not issubclass(theirs, sdk.RelayEvent):
            yield name, theirs, getattr(relay_actors, name)
    for name in sorted(ACTION_FAMILIES):
        yield name, getattr(sdk_call, name), getattr(relay_actors.action, name)


def test_every_method_and_signature_of_the_sdk_classes() -> None:
    """Client, Call, Message, RelayError and every Action: each public method or attribute of the
    SDK's class exists here, and each method accepts every argument the SDK's accepts."""
    gaps: list[str] = []
    checked = 0
    for name, theirs, ours in _sdk_classes():
        for attr, value in _public_members(theirs).items():
            if (name, attr) in MISSING_ON_PURPOSE:
                assert not hasattr(ours, attr), f"{name}.{attr} is allow-listed but exists: update the list"
                continue
            mine = getattr(ours, attr, None)
            if mine is None and not (name == "Message" and attr == "result"):  # an instance attribute here
                gaps.append(f"{name}.{attr} missing")
                continue
            if inspect.isfunction(value) and mine is not None:
                gaps.extend(_signature_gaps(f"{name}.{attr}", value, mine))
                checked += 1
        if name not in INTERNAL_CONSTRUCTORS and "__init__" in vars(theirs):
            gaps.extend(_signature_gaps(f"{name}.__init__", theirs.__init__, ours.__init__))
    assert checked > 100  # Call's verbs, the client's methods, every action's sub-commands
    assert gaps == []


_SELF_ASSIGN = re.compile(r"^\s*self\.([a-z]\w*)\s*(?::[^=]+)?=", re.M)


def _instance_attributes(cls: type) -> set[str]:
    """Public attributes ``cls`` (and its bases) set on ``self`` in ``__init__``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if inspect.isfunction(init):
            names.update(_SELF_ASSIGN.findall(inspect.getsource(init)))
    return names


def test_every_instance_attribute_of_the_sdk_classes() -> None:
    """What the SDK sets in ``__init__`` (``client.project``, ``client.token``, ``call.call_id``,
    ``action.control_id``, ``message.body``, ``error.code``, ...) is readable here too."""
    gaps = []
    for name, theirs, ours in _sdk_classes():
        wanted = _instance_attributes(theirs)
        have = _instance_attributes(ours)
        gaps.extend(f"{name}.{a}" for a in sorted(wanted) if not hasattr(ours, a) and a not in have)
    assert "token" in _instance_attributes(sdk.RelayClient)  # the SDK really was read
    assert gaps == []


def test_action_sub_commands_take_the_sdk_arguments() -> None:
    """The gap found by hand: ``PlayAction.pause(behavior)``."""
    params = inspect.signature(relay_actors.PlayAction.pause).parameters
    assert "behavior" in params and params["behavior"].default is None
    assert isinstance(relay_actors.PlayAction.__mro__[1], type)
    assert issubclass(relay_actors.PlayAction, relay_actors.action.VolumeAction)
    assert issubclass(relay_actors.RecordAction, relay_actors.action.PausableAction)
    assert issubclass(relay_actors.TapAction, relay_actors.action.StoppableAction)


# --- events ------------------------------------------------------------------------------------

#: Inner params carrying every field any SDK event class reads (values of the right types).
RICH_PARAMS: dict[str, Any] = {
    "call_id": "call-1",
    "node_id": "node-1",
    "timestamp": 1700000000.5,
    "control_id": "ctl-1",
    "state": "finished",
    "call_state": "ended",
    "end_reason": "hangup",
    "direction": "inbound",
    "device": {"type": "phone", "params": {"from_number": "+1", "to_number": "+2"}},
    "peer": {"call_id": "peer-1"},
    "project_id": "proj-1",
    "context": "office",
    "protocol": "signalwire_x",
    "segment_id": "seg-1",
    "tag": "tag-1",
    "url": "https://top.example/u",
    "duration": 3.5,
    "size": 4096,
    "record": {"url": "https://rec.example/r.mp3", "duration": 2.25, "size": 1234},
    "result": {"type": "digit", "params": {"digits": "12"}},
    "final": True,
    "connect_state": "connected",
    "detect": {"type": "machine", "params": {"event": "HUMAN"}},
    "fax": {"type": "finished", "params": {"pages": 1}},
    "tap": {"type": "audio", "params": {"direction": "both"}},
    "dial_state": "answered",
    "call": {"call_id": "leg-1", "node_id": "node-1"},
    "sip_refer_to": "sip:bob@example.com",
    "sip_refer_response_code": "202",
    "sip_notify_response_code": "200",
    "denoised": True,
    "status": "enqueue",
    "id": "queue-1",
    "name": "support",
    "position": 3,
    "conference_id": "conf-1",
    "code": "5001",
    "message": "oops",
    "message_id": "msg-1",
    "from_number": "+15550000001",
    "to_number": "+15550000002",
    "body": "hello",
    "media": ["https://m.example/1.png"],
    "segments": 2,
    "message_state": "delivered",
    "reason": "",
    "tags": ["a", "b"],
    "recording_id": "rec-1",
}


def _sdk_event_classes() -> list[type]:
    return [getattr(sdk, n) for n in sdk.__all__ if inspect.isclass(getattr(sdk, n)) and n.endswith("Event")]


@pytest.mark.parametrize("params", [RICH_PARAMS, {}], ids=["every-field", "empty"])
def test_event_fields_match_the_sdk(params: dict[str, Any]) -> None:
    """Every field of every SDK event class, read from the same payload, has the same value
    here (and ``parse_event(payload)`` picks the class of the same name)."""
    classes = _sdk_event_classes()
    assert len(classes) == 24
    compared = 0
    for event_type, theirs_cls in sdk_event.EVENT_CLASS_MAP.items():
        payload = {"event_type": event_type, "params": params}
        theirs = sdk.parse_event(payload)
        ours = relay_actors.parse_event(payload)
        assert type(ours).__name__ == type(theirs).__name__ == theirs_cls.__name__
        for f in dataclasses.fields(theirs):
            assert getattr(ours, f.name) == getattr(theirs, f.name), f"{theirs_cls.__name__}.{f.name}"
            compared += 1
        # The SDK's classmethod too, on the base and on the class.
        assert getattr(relay_actors, theirs_cls.__name__).from_payload(payload) == ours
    assert compared > 150


def test_parse_event_takes_the_sdk_payload_and_our_parts() -> None:
    payload = {"event_type": "calling.call.record", "params": dict(RICH_PARAMS)}
    sdk_form = relay_actors.parse_event(payload)
    parts_form = relay_actors.parse_event("calling.call.record", payload["params"])
    assert sdk_form == parts_form and isinstance(sdk_form, relay_actors.RecordEvent)
    assert sdk_form.url == "https://rec.example/r.mp3" and sdk_form.record["size"] == 1234
    assert relay_actors.parse_event(payload=payload).call_id == "call-1"
    assert type(relay_actors.parse_event({"event_type": "calling.new.thing", "params": {}})) is (
        relay_actors.RelayEvent
    )
    with pytest.raises(TypeError):
        relay_actors.parse_event(payload, {})  # type: ignore[call-overload]


# --- behaviour, against the emulator --------------------------------------------------------------


def _observed(e: Any) -> tuple[Any, ...]:
    """Everything an app can see of ``e.code``: its type, repr, str, JSON, hash and comparisons."""
    import orjson

    code = e.code
    return (
        type(code),
        repr(code),
        str(code),
        f"{code}",
        json.dumps({"code": code}),
        orjson.dumps({"code": code}),
        hash(code),
        code in {404},
        {code: "x"}.get(404),
        code == 404,
        code in (404, 410),
        400 <= code < 500,
        code == -1,
        str(e),
    )


async def test_error_codes_are_the_sdks_ints(harness: Harness) -> None:
    """``e.code`` is what the SDK's is, an ``int``, in every way an app can observe it; which
    client-side failure it was is ``e.failure``. Compared with the SDK's own RelayError."""
    with pytest.raises(RelayError) as info:
        await harness.client.execute("calling.answer", {"call_id": "no-such-call", "node_id": "n"})
    e = info.value
    theirs = sdk.RelayError(404, e.message)
    assert _observed(e) == _observed(theirs) and e.failure is None and e.call_gone
    assert _observed(e)[:9] == (
        int,
        "404",
        "404",
        "404",
        '{"code": 404}',
        b'{"code":404}',
        hash(404),
        True,
        "x",
    )
    crossed = pickle.loads(pickle.dumps(e))  # as it crosses a Ray process boundary
    assert _observed(crossed) == _observed(e) and crossed.failure is None and crossed.message == e.message
    # A client-side failure: -1 as in the SDK, and the kind of failure on its own attribute.
    closed = RelayError("closed", "the client closed")
    assert _observed(closed) == _observed(sdk.RelayError(-1, "the client closed"))
    assert closed.code == -1 and closed.failure == "closed" and not closed.call_gone
    again = pickle.loads(pickle.dumps(closed))
    assert (type(again), again.code, again.failure, again.message) == (
        RelayError,
        -1,
        "closed",
        closed.message,
    )
    # The typed subclasses keep their class, and theirs too.
    from relay_actors import CallEndedError

    ended = pickle.loads(pickle.dumps(CallEndedError("call c1 ended")))
    assert type(ended) is CallEndedError and (ended.code, ended.failure) == (-1, "call_ended")


async def test_typed_fields_on_live_events(harness: Harness) -> None:
    """Record, tap, stream, transcribe, refer, queue and messaging events carry the SDK's fields."""
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    seen: dict[str, relay_actors.RelayEvent] = {}
    for event_type in (
        relay_actors.EVENT_CALL_TAP,
        relay_actors.EVENT_CALL_STREAM,
        relay_actors.EVENT_CALL_REFER,
        relay_actors.EVENT_CALL_QUEUE,
    ):
        call.on(event_type, lambda ev, t=event_type: seen.setdefault(t, ev))
    tap_device = {"type": "ws", "params": {"uri": "wss://tap.example"}}
    tap = await call.tap({"type": "audio", "params": {}}, tap_device)
    stream = await call.stream("wss://stream.example/s", name="s1")
    await call.refer({"type": "sip", "params": {"to": "sip:bob@example.com"}})
    await call.queue_enter("support")
    await wait_until(lambda: len(seen) == 4)
    assert seen[relay_actors.EVENT_CALL_TAP].device == tap_device  # type: ignore[attr-defined]
    assert seen[relay_actors.EVENT_CALL_TAP].tap == {"type": "audio", "params": {}}  # type: ignore[attr-defined]
    assert seen[relay_actors.EVENT_CALL_STREAM].url == "wss://stream.example/s"  # type: ignore[attr-defined]
    assert seen[relay_actors.EVENT_CALL_STREAM].name == "s1"  # type: ignore[attr-defined]
    refer = seen[relay_actors.EVENT_CALL_REFER]
    assert refer.sip_refer_to == "sip:bob@example.com"  # type: ignore[attr-defined]
    assert refer.sip_refer_response_code == "202"  # type: ignore[attr-defined]
    queue = seen[relay_actors.EVENT_CALL_QUEUE]
    assert queue.queue_name == "support" and queue.queue_id  # type: ignore[attr-defined]
    await tap.stop()
    await stream.stop()
    harness.core.set_config({"durations": {"record": 0.05, "transcribe": 0.05}})
    record = await call.record({"beep": False})
    recorded = await record.wait(timeout=5)
    assert isinstance(recorded, relay_actors.RecordEvent)
    assert recorded.state == relay_actors.RECORD_STATE_FINISHED and recorded.record["url"] == recorded.url
    transcribed = await (await call.transcribe()).wait(timeout=5)
    assert isinstance(transcribed, relay_actors.TranscribeEvent)
    assert transcribed.url.endswith(".json") and transcribed.recording_id and transcribed.size == 2048
    message = await harness.client.send_message(
        to_number="+15550009999", from_number="+15550000001", body="hi"
    )
    final = await message.wait(timeout=5)
    assert isinstance(final, relay_actors.MessageStateEvent)
    assert (final.to_number, final.from_number, final.body) == ("+15550009999", "+15550000001", "hi")
    assert final.message_state == relay_actors.MESSAGE_STATE_DELIVERED


async def test_end_reason_and_play_state_constants_on_a_call(harness: Harness) -> None:
    call = await harness.answered()
    play = await call.play_tts("hello")
    assert (await play.wait(timeout=5)).state == relay_actors.PLAY_STATE_FINISHED
    await call.hangup()
    ended = await call.wait_for_ended(timeout=5)
    assert ended.end_reason == relay_actors.END_REASON_HANGUP  # type: ignore[attr-defined]


async def test_play_pause_sends_behavior(harness: Harness) -> None:
    harness.core.set_config({"durations": SLOW})
    call = await harness.answered()
    states: list[str] = []
    call.on(relay_actors.EVENT_CALL_PLAY, lambda ev: states.append(ev.state))
    play = await call.play_tts("long")
    await play.pause(behavior="silence")
    await play.pause()  # without it: not sent, as in the SDK
    paused = harness.requests("calling.play.pause", control_id=play.control_id)
    assert [p.get("behavior") for p in paused] == ["silence", None]
    await wait_until(lambda: relay_actors.PLAY_STATE_PAUSED in states)
    await play.stop()


async def test_client_attributes_as_in_the_sdk(emulator: Emulator) -> None:
    """``project``, ``host``, ``contexts``, ``token``, ``jwt_token`` read as in the SDK; the
    secrets never show in ``repr``."""
    client = RelayClient(**client_kwargs(emulator, contexts=["office", "sales"]))
    assert (client.project, client.host, client.contexts) == (
        emulator.project,
        emulator.host,
        ["office", "sales"],
    )
    assert client.token == emulator.token and client.jwt_token == ""
    assert emulator.token not in repr(client) and emulator.token not in str(client)
    jwt = RelayClient(**client_kwargs(emulator, project=None, token=None), jwt_token=emulator.jwt)
    assert jwt.jwt_token == emulator.jwt and jwt.token == "" and emulator.jwt not in repr(jwt)


async def test_relay_max_connections(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RELAY_MAX_CONNECTIONS`` caps the clients connected at once in this process, as in the
    SDK (a ``RuntimeError``); a slot frees on disconnect."""
    monkeypatch.setenv("RELAY_MAX_CONNECTIONS", "1")
    first = RelayClient(**client_kwargs(emulator))
    second = RelayClient(**client_kwargs(emulator))
    try:
        await first.connect()
        with pytest.raises(RuntimeError, match="RELAY_MAX_CONNECTIONS") as info:
            await second.connect()
        assert isinstance(info.value, RelayError) and info.value.failure == "connection_limit"
        assert not second.connected
        with pytest.raises(RuntimeError):
            await second.serve(asyncio.Event())
        await first.connect()  # itself: not counted twice
        await first.disconnect()
        await second.connect()
        assert second.connected
        monkeypatch.setenv("RELAY_MAX_CONNECTIONS", "not-a-number")  # the SDK's fallback: 1
        with pytest.raises(RuntimeError):
            await first.connect()
        monkeypatch.setenv("RELAY_MAX_CONNECTIONS", "2")
        await first.connect()
        assert first.connected and second.connected
    finally:
        await first.disconnect()
        await second.disconnect()


@pytest.fixture
def relay_logger() -> Iterator[logging.Logger]:
    """The ``relay_actors`` logger, restored after the test (configure_logging changes it)."""
    from relay_actors import config

    logger = logging.getLogger("relay_actors")
    saved = (list(logger.handlers), logger.level, logger.propagate, config._logging_configured)
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    config._logging_configured = saved[3]


async def test_signalwire_log_env(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    relay_logger: logging.Logger,
) -> None:
    """``SIGNALWIRE_LOG_MODE``/``_LEVEL``/``_FORMAT`` configure our logs as the SDK's
    ``configure_logging()`` does for its own; secrets stay out."""
    monkeypatch.setenv("SIGNALWIRE_LOG_MODE", "stderr")
    monkeypatch.setenv("SIGNALWIRE_LOG_LEVEL", "debug")
    monkeypatch.setenv("SIGNALWIRE_LOG_FORMAT", "json")
    relay_actors.configure_logging(force=True)
    assert relay_logger.level == logging.DEBUG and not relay_logger.propagate
    client = RelayClient(**client_kwargs(emulator))
    await client.connect()
    await client.disconnect()
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.err.splitlines() if line.strip()]
    assert out.out == "" and lines, "json lines on stderr"
    assert {"timestamp", "level", "logger", "event"} <= set(lines[0])
    assert any(entry["level"] == "debug" for entry in lines)
    assert all(entry["logger"].startswith("relay_actors") for entry in lines)
    assert emulator.token not in out.err

    monkeypatch.setenv("SIGNALWIRE_LOG_MODE", "off")
    relay_actors.configure_logging(force=True)
    logging.getLogger("relay_actors.client").error("must not show")
    assert "must not show" not in capsys.readouterr().err

    monkeypatch.setenv("SIGNALWIRE_LOG_MODE", "default")
    monkeypatch.setenv("SIGNALWIRE_LOG_LEVEL", "warning")
    monkeypatch.setenv("SIGNALWIRE_LOG_FORMAT", "console")
    relay_actors.configure_logging(force=True)
    relay_actors.configure_logging()  # once only, as in the SDK: no second handler
    logging.getLogger("relay_actors.client").info("too quiet")
    logging.getLogger("relay_actors.client").warning("loud\x1b[31menough")
    printed = capsys.readouterr().out
    assert "too quiet" not in printed and printed.count("loud[31menough") == 1 and "[WARNING]" in printed


# --- one app, both libraries ---------------------------------------------------------------------


async def sdk_style_app(relay: Any, emu: Emulator) -> list[Any]:
    """An app written against ``signalwire.relay``, using only its surface (top-level names,
    ``relay.constants``, typed event fields, ``RelayError`` compared with ints); ``relay`` is the
    imported module, so the only difference between the two runs is the import."""
    client = relay.RelayClient(project=emu.project, token=emu.token, host=emu.host, contexts=["office"])
    seen: list[Any] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @client.on_call
    async def handle(call: Any) -> None:
        try:
            await call.answer()
            play = await call.play_tts("Welcome")
            played = await play.wait(timeout=5)
            seen.append(("play", type(played).__name__, played.state == relay.constants.PLAY_STATE_FINISHED))
            record = await call.record({"beep": False})
            recorded = await record.wait(timeout=5)
            seen.append(
                ("record", recorded.state == relay.constants.RECORD_STATE_FINISHED, bool(recorded.url))
            )
            await call.hangup()
            ended = await call.wait_for_ended(timeout=5)
            seen.append(("ended", ended.call_state, ended.end_reason == relay.constants.END_REASON_HANGUP))
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            raise

    await client.connect()
    try:
        emu.core.inject_calls("office")
        await asyncio.wait_for(done, 10)
        message = await client.send_message(to_number="+15550009999", from_number="+15550000001", body="hi")
        final = await message.wait(timeout=5)
        seen.append(
            ("message", message.state, final.params["message_state"] == relay.MESSAGE_STATE_DELIVERED)
        )
        try:
            await client.execute("calling.answer", {"call_id": "no-such-call", "node_id": "n"})
        except relay.RelayError as e:
            seen.append(("error", e.code == 404, e.code in (404, 410), e.code != 410))
        event = relay.parse_event({"event_type": "calling.call.queue", "params": {"id": "q1", "position": 2}})
        seen.append(("parsed", type(event).__name__, event.queue_id, event.position))
    finally:
        await client.disconnect()
    return seen


async def test_the_same_app_runs_on_both(tls_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK-style app gives the same observations with ``signalwire.relay`` and with
    ``relay_actors`` (both over wss:// to the emulator, trusting it through the SDK's variable)."""
    assert tls_emulator.ca_file is not None
    monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", tls_emulator.ca_file)
    tls_emulator.core.set_config({"durations": {"play": 0.05, "record": 0.05}})
    with_sdk = await sdk_style_app(sdk, tls_emulator)
    with_ours = await sdk_style_app(relay_actors, tls_emulator)
    assert with_ours == with_sdk
    assert with_sdk == [
        ("play", "PlayEvent", True),
        ("record", True, True),
        ("ended", "ended", True),
        ("message", "delivered", True),
        ("error", True, True, True),
        ("parsed", "QueueEvent", "q1", 2),
    ]
