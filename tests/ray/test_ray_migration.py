"""Migration (issue 9): apps written against the official SDK (``signalwire.relay`` 3.7.5) run
unchanged but for their import line, in-process and on Ray, and behave as with the SDK.

Each app in ``migration_apps/`` is SDK source text. Every test runs one app three times
against the same wss:// emulator (credentials, space and CA from the SDK's environment
variables): the text as is (the official SDK), the text with ``from signalwire.relay import``
changed to ``from relay_actors import`` in-process, and that text on Ray the way ``relay-actors
run app:client --ray`` serves it (the module's own client, ``configure_ray``; its handlers
run in CallActors, its ``main()`` on the driver). Scripted callers and the emulator's outcome
maps make every branch run. Each run yields what the app observed (results, states, events
its listeners saw, digits, error-code comparisons) and the emulator's journal per call or
message (requests received, events sent), ids and timestamps normalised; the relay_actors
runs must equal the SDK run. A deliberate difference is a row of README's table "Differences
from the official SDK" and is checked on both sides instead (``DELIBERATE``: a dial that
times out, ``Call.wait_for()`` after the call ended); a difference found here that was a bug
has its own focused test (``tests/client/test_message_listeners.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import types
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
import ray_helpers as helpers

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime.actor_messages import NAMESPACE
from relay_actors.ray_runtime.ray_attach import ship_module_by_value

pytestmark = pytest.mark.timeout(120)

APPS = Path(__file__).parent / "migration_apps"
SDK_IMPORT = "from signalwire.relay import"
OUR_IMPORT = "from relay_actors import"
FLAVOURS = ("sdk", "local", "ray")

#: Keys whose values are ids or times: they differ between runs by nature.
ID_KEYS = {"call_id", "node_id", "control_id", "tag", "message_id", "segment_id", "event_channel", "protocol"}
TIME_KEYS = {"timestamp", "start_time", "end_time", "duration"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

CLIENT_ENV = (
    "SIGNALWIRE_PROJECT_ID",
    "SIGNALWIRE_API_TOKEN",
    "SIGNALWIRE_JWT_TOKEN",
    "SIGNALWIRE_SPACE",
    "SIGNALWIRE_RELAY_SCHEME",
    "SIGNALWIRE_RELAY_CA_FILE",
    "RELAY_MAX_CONNECTIONS",
)


@pytest.fixture
async def wss_emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    """A wss:// emulator, and the SDK's environment pointing at it (as a deployed app has)."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    async with Emulator(tls=True, ping_interval=0, durations=FAST_DURATIONS, journal_limit=100_000) as emu:
        assert emu.ca_file is not None
        monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", emu.project)
        monkeypatch.setenv("SIGNALWIRE_API_TOKEN", emu.token)
        monkeypatch.setenv("SIGNALWIRE_SPACE", emu.host)
        monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", emu.ca_file)
        yield emu


# --- loading an app ----------------------------------------------------------------------


def app_source(name: str, flavour: str) -> str:
    """The app's text; for relay_actors, with its one import line changed and nothing else."""
    text = (APPS / f"{name}.py").read_text()
    assert "import relay_actors" not in text and OUR_IMPORT not in text and text.count(SDK_IMPORT) == 1
    return text if flavour == "sdk" else text.replace(SDK_IMPORT, OUR_IMPORT)


def load_app(name: str, flavour: str) -> types.ModuleType:
    """Import the app's text as a fresh module (registered: Ray ships it by value)."""
    module_name = f"migration_{name}_{flavour}_{uuid.uuid4().hex[:6]}"
    module = types.ModuleType(module_name)
    module.__file__ = str(APPS / f"{name}.py")
    sys.modules[module_name] = module
    exec(compile(app_source(name, flavour), module.__file__, "exec"), module.__dict__)
    return module


def remote_observer(rec_name: str) -> Callable[[str, str, Any], None]:
    """``observe`` for Ray: every process (driver, CallActors) reports to one Recorder actor,
    with its pid."""

    def observe(label: str, what: str, value: Any) -> None:
        helpers.recorder(rec_name).note.remote((label, what, value, os.getpid()))

    return observe


# --- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    flavour: str
    #: Per label (one caller, the driver, the handler): what the app observed (``split_notes``).
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per label: the emulator's journal for its calls and messages (``frames_of``).
    frames: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per label: the processes it was observed in.
    pids: dict[str, set[int]] = field(default_factory=dict)


Drive = Callable[[types.ModuleType, Emulator], Awaitable[None]]


async def run_app(name: str, flavour: str, emulator: Emulator, drive: Drive, finishing: set[str]) -> Run:
    """Connect the app's client, ``drive`` it, wait until each of the ``finishing`` labels
    observed ``done``, disconnect."""
    emulator.core.journal.clear()
    module = load_app(name, flavour)
    client = module.client
    notes: list[tuple[Any, ...]] = []
    recorder = None
    try:
        if flavour == "ray":
            app = f"mig{uuid.uuid4().hex[:6]}"
            rec_name = f"recorder-{app}"
            recorder = helpers.start_recorder(rec_name)
            module.observe = remote_observer(rec_name)
            # What ``relay-actors run module:client --ray`` does with the module's client.
            client.configure_ray(RayOptions(app=app, connections=1, min_call_actors=2, max_call_actors=2))
            ship_module_by_value(module.__name__)
        else:
            module.observe = lambda label, what, value: notes.append((label, what, value, os.getpid()))
        await asyncio.wait_for(client.connect(), 60)
        try:
            await asyncio.wait_for(drive(module, emulator), 60)

            async def collected() -> list[tuple[Any, ...]]:
                if recorder is not None:
                    notes[:] = [tuple(n) for n in (await recorder.dump.remote())["notes"]]
                done = {note[0] for note in notes if note[1] == "done"}
                return notes if done >= finishing else []

            await helpers.eventually(collected, 30, what=f"{name}/{flavour}: every label done")
        finally:
            await asyncio.wait_for(client.disconnect(), 60)
    finally:
        sys.modules.pop(module.__name__, None)
        if recorder is not None:
            ray.kill(recorder)
    if flavour == "ray":
        left = helpers.relay_actor_names(client.ray_options.app)
        for actor in left:
            ray.kill(ray.get_actor(actor, namespace=NAMESPACE), no_restart=True)
        assert not left, f"actors left running after disconnect: {left}"
    return summarise(flavour, notes, emulator.core.journal.frames())


def summarise(flavour: str, notes: list[tuple[Any, ...]], journal: dict[str, list[Any]]) -> Run:
    run = Run(flavour)
    by_label: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    ids: dict[str, set[str]] = defaultdict(set)
    for label, what, value, pid in notes:
        by_label[label].append((what, value))
        run.pids.setdefault(label, set()).add(pid)
        if isinstance(value, dict):
            ids[label].update(str(value[k]) for k in ("call_id", "tag", "message_id") if value.get(k))
    run.notes = {label: split_notes(normalise(seq)) for label, seq in by_label.items()}
    run.frames = {label: frames_of(journal, ids[label]) for label in by_label}
    return run


def split_notes(seq: list[list[Any]]) -> dict[str, Any]:
    """A label's observations: its steps in order, and what its listeners saw in order per
    event family (``("play", ...)``); how the two interleave is timing."""
    steps = [item for item in seq if item[0] != "event"]
    heard: dict[str, list[Any]] = defaultdict(list)
    for _, value in (item for item in seq if item[0] == "event"):
        heard[value[0]].append(value[1:])
    return {"steps": steps, "events": dict(heard)}


def frames_of(journal: dict[str, list[Any]], subject_ids: set[str]) -> dict[str, Any]:
    """The requests the emulator received and the events it sent for these calls and
    messages (by call id, dial tag or message id), ids and times normalised: the requests
    in order, the events in order per event type. How requests and events interleave, and
    events of concurrent actions, is timing, not behaviour."""
    requests: list[Any] = []
    events: list[Any] = []
    seen_events: set[Any] = set()
    subject_ids = set(subject_ids)
    for entries in journal.values():  # a dial's legs are its calls too
        for entry in entries:
            inner = ((entry["frame"].get("params") or {}).get("params")) or {}
            if entry["dir"] == "out" and inner.get("tag") in subject_ids and inner.get("call_id"):
                subject_ids.add(inner["call_id"])
    for entries in journal.values():
        responses = {
            e["frame"].get("id"): e["frame"].get("result") or {}
            for e in entries
            if e["dir"] == "out" and "method" not in e["frame"]
        }
        for entry in entries:
            frame = entry["frame"]
            method = frame.get("method", "")
            if entry["dir"] == "in" and method and not method.startswith("signalwire."):
                params = frame.get("params") or {}
                result = responses.get(frame.get("id"), {})
                if _mentions(params, subject_ids) or result.get("message_id") in subject_ids:
                    requests.append({"method": method, "params": params})
            elif (
                entry["dir"] == "out" and method == "signalwire.event" and frame.get("id") not in seen_events
            ):
                outer = frame.get("params") or {}
                if _mentions(outer.get("params") or {}, subject_ids):
                    seen_events.add(frame.get("id"))  # a redelivered event counts once
                    events.append(outer)
    by_type: dict[str, list[Any]] = defaultdict(list)
    for event in events:
        by_type[event.get("event_type", "")].append(event.get("params"))
    return {"requests": normalise(requests), "events": normalise(dict(by_type))}


def _mentions(params: dict[str, Any], subject_ids: set[str]) -> bool:
    found = [params.get(k) for k in ("call_id", "tag", "message_id")]
    call = params.get("call")
    if isinstance(call, dict):
        found.append(call.get("call_id"))
    return any(v in subject_ids for v in found if v)


def normalise(value: Any) -> Any:
    """Ids become ``<id>`` (``""`` stays empty: an id that is missing is a difference), times
    go, protocol strings become ``<protocol>``; tuples and lists compare alike."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in TIME_KEYS:
                continue
            out[key] = ("<id>" if item else item) if key in ID_KEYS else normalise(item)
        return out
    if isinstance(value, (list, tuple)):
        return [normalise(item) for item in value]
    if isinstance(value, str):
        value = _UUID.sub("<id>", value)
        return re.sub(r"signalwire_[0-9a-f]+", "<protocol>", value)
    return value


async def compare(
    name: str, emulator: Emulator, drive: Drive, labels: set[str], finishing: set[str] | None = None
) -> dict[str, Run]:
    """Run the app under each flavour and assert the relay_actors runs equal the SDK run
    (``finishing``: the labels that end with ``done``, default all)."""
    runs = {}
    for flavour in FLAVOURS:
        started = time.monotonic()
        runs[flavour] = await run_app(
            name, flavour, emulator, drive, labels if finishing is None else finishing
        )
        print(f"{name}/{flavour}: {time.monotonic() - started:.1f} s")
    sdk = runs["sdk"]
    assert set(sdk.notes) == labels
    for flavour in FLAVOURS[1:]:
        run = runs[flavour]
        for label in sorted(labels):
            where = f"{name}/{flavour}/{label}"
            check = DELIBERATE.get((name, label))
            if check is not None:
                check(sdk, run, label)
                continue
            assert run.notes.get(label) == sdk.notes[label], difference(
                where, sdk.notes[label], run.notes.get(label)
            )
            assert run.frames.get(label) == sdk.frames[label], difference(
                where, sdk.frames[label], run.frames.get(label)
            )
    # On Ray, the handlers ran in CallActors and main() on the driver.
    ray_run = runs["ray"]
    for label in labels:
        pids = ray_run.pids[label]
        if label.startswith("driver"):
            assert pids == {os.getpid()}, f"{name}/ray/{label} ran in {pids}, not on the driver"
        else:
            assert os.getpid() not in pids, f"{name}/ray/{label}: the handler ran on the driver"
    return runs


def difference(where: str, sdk: Any, ours: Any) -> str:
    """The first place where ``ours`` departs from the SDK's, for the assertion message."""
    path = ""
    while type(sdk) is type(ours) and isinstance(sdk, (dict, list)) and sdk != ours:
        keys = list(sdk) if isinstance(sdk, dict) else list(range(max(len(sdk), len(ours))))
        for key in keys:
            a = sdk.get(key) if isinstance(sdk, dict) else (sdk[key] if key < len(sdk) else None)
            b = ours.get(key) if isinstance(ours, dict) else (ours[key] if key < len(ours) else None)
            if a != b:
                path, sdk, ours = f"{path}[{key!r}]", a, b
                break
        else:
            break
    return f"{where}{path}: the SDK's {sdk!r} != relay_actors' {ours!r}"


def steps(run: Run, label: str) -> dict[str, Any]:
    """A label's observations other than listener events, by name (the last of each)."""
    return dict(run.notes[label]["steps"])


def heard(run: Run, label: str, family: str) -> list[Any]:
    """What a label's listeners saw of one event family, in order."""
    return run.notes[label]["events"].get(family, [])


# --- the apps ------------------------------------------------------------------------------

#: IVR callers: their number (the label) and what they press and say, one item per collect.
CALLERS = {
    "+15551000001": [{"digits": "1"}],  # sales: connect
    "+15551000002": [{"speech": "support"}, {"digits": "4321#"}],  # support: account, record
    "+15551000003": [{"silence": True}],  # nothing: goodbye
    "+15551000004": [{"no_match": True}, {"speech": "sales"}],  # mumbles, asked again: sales
    "+15551000005": [{"digits": "2"}, {"digits": "99"}],  # support, account cut short by the timeout
    "+15551000006": [{"digits": "3"}],  # holds, and hangs up after the hold music
}
HOLDING = "+15551000006"


async def drive_ivr(module: types.ModuleType, emulator: Emulator) -> None:
    injected = {}
    for number, inputs in CALLERS.items():
        (injected[number],) = emulator.core.inject_calls("ivr", 1, from_number=number, inputs=inputs)
    # The holding caller hangs up once the hold music (its second play) has finished.
    holding = injected[HOLDING]

    async def music_played() -> bool:
        finished = [
            event
            for entries in emulator.core.journal.frames().values()
            for entry in entries
            if entry["dir"] == "out" and entry["frame"].get("method") == "signalwire.event"
            for event in [entry["frame"]["params"]]
            if event.get("event_type") == "calling.call.play"
            and event["params"].get("call_id") == holding
            and event["params"].get("state") == "finished"
        ]
        return len(finished) >= 2

    await helpers.eventually(music_played, 20, what="hold music played")
    assert emulator.core.hangup(holding)


async def test_ivr_runs_unchanged(local_ray: str, wss_emulator: Emulator) -> None:
    runs = await compare("ivr", wss_emulator, drive_ivr, set(CALLERS))
    sdk = runs["sdk"]
    # Every branch ran, and the SDK saw what the scripted callers did.
    sales, support, silent, mumble, short, holding = (steps(sdk, n) for n in CALLERS)
    assert sales["menu"] == {"type": "digit", "params": {"digits": "1", "terminator": ""}}
    assert sales["connected"][0] == "connected"
    assert support["menu"]["type"] == "speech" and support["menu"]["params"]["text"] == "support"
    assert support["account"] == [
        "finished",
        {"type": "digit", "params": {"digits": "4321", "terminator": "#"}},
    ]
    assert support["recorded"] == ["finished", True, "wav"]
    assert short["account"][1]["params"]["digits"] == "99"
    assert silent["menu"]["type"] == "no_input" and silent["goodbye"] == "finished"
    assert mumble["menu"]["type"] == "no_match" and mumble["menu again"]["params"]["text"] == "sales"
    assert mumble["connected"][0] == "connected"
    # The caller hung up on hold: a verb on the gone call resolves at once and sends nothing.
    assert holding["held"] == "finished" and holding["caller hung up"] == ["ended", "hangup"]
    assert holding["late play"] == ["", {}, True] and holding["no more events"] == "timeout"
    assert "Are you still there?" not in str(sdk.frames[HOLDING]["requests"])
    for label in CALLERS:
        seen = steps(sdk, label)
        assert "error" not in seen, seen
        assert seen["ended"] == ["ended", "hangup", True]
        assert seen["hangup again"] == {}
        assert seen["no detect"] == "timeout"
        assert heard(sdk, label, "state")[-1] == [True, "ended", "hangup"]
    assert heard(sdk, "+15551000001", "connect") == [["connecting"], ["connected"]]
    assert heard(sdk, "+15551000002", "record") == [[True, "recording", ""], [True, "finished", "wav"]]
    assert support["record completed"] == "finished"


NO_ANSWER = "+15550004004"


async def drive_dialer(module: types.ModuleType, emulator: Emulator) -> None:
    emulator.core.inject_calls("callback", 1, from_number="+15550004003")
    await module.main()

    # The dial that timed out: wait until its leg stopped ringing (answered, or hung up).
    async def settled() -> bool:
        legs = [c for c in emulator.core.list_calls() if c["device"]["params"].get("to_number") == NO_ANSWER]
        return bool(legs) and all(c["state"] in ("answered", "ended") for c in legs)

    await helpers.eventually(settled, 10, what="the timed-out dial's leg settled")


def _states(frames: dict[str, Any], event_type: str, key: str) -> list[str]:
    return [params[key] for params in frames["events"].get(event_type, [])]


def timed_out_dial(sdk_run: Run, our_run: Run, label: str) -> None:
    """README, "a dial nobody takes in time": the SDK gives up on the dial but leaves its leg
    ringing, to be answered with nobody on the line; relay_actors hangs the leg up."""
    assert our_run.notes[label] == sdk_run.notes[label]
    sdk, ours = sdk_run.frames[label], our_run.frames[label]
    assert [r["method"] for r in sdk["requests"]] == ["calling.dial"]
    assert _states(sdk, "calling.call.state", "call_state") == ["created", "ringing", "answered"]
    assert _states(sdk, "calling.call.dial", "dial_state") == ["dialing", "answered"]
    assert [r["method"] for r in ours["requests"]] == ["calling.dial", "calling.end"]
    assert ours["requests"][-1]["params"]["reason"] == "cancel"
    assert _states(ours, "calling.call.state", "call_state") == ["created", "ringing", "ending", "ended"]
    assert "answered" not in _states(ours, "calling.call.dial", "dial_state")


#: ``(app, label)`` that differ on purpose (a row of README's table "Differences from the
#: official SDK"): checked on both sides instead of equality.
DELIBERATE: dict[tuple[str, str], Callable[[Run, Run, str], None]] = {
    ("dialer", "driver no answer"): timed_out_dial,
}


async def test_dialer_runs_unchanged(local_ray: str, wss_emulator: Emulator) -> None:
    # Dialled phones pick up after 1 s: a dial with a 0.5 s timeout gives up while it rings.
    wss_emulator.core.set_config({"dial_outcomes": {"+15550004002": "busy"}, "durations": {"answer": 1.0}})
    labels = {"driver", "driver busy", "driver no answer", "handler"}
    runs = await compare("dialer", wss_emulator, drive_dialer, labels, finishing={"driver", "handler"})
    sdk = runs["sdk"]
    for label in ("driver", "handler"):
        seen = steps(sdk, label)
        assert seen["call"]["state"] == "answered" and seen["call"]["tag"] == "<id>"
        assert seen["played"] == ["finished", True, True]
        assert seen["recorded"] == ["finished", "mp3"]
        assert seen["digits"] == "200"
        assert seen["ended"] == ["ended", "hangup", "ended"]
    for label in ("driver busy", "driver no answer"):
        assert steps(sdk, label)["dial failed"] == {
            "tag": "<id>",
            "-1": True,
            "404": False,
            "repr": "-1",
            "json": '{"code": -1}',
            "keyed": "client side",
        }
    busy = runs["sdk"].frames["driver busy"]
    assert [r["method"] for r in busy["requests"]] == ["calling.dial"]
    assert busy["events"]["calling.call.dial"][-1]["dial_state"] == "failed"


async def drive_sender(module: types.ModuleType, emulator: Emulator) -> None:
    emulator.core.messaging.inject(
        "sms",
        from_number="+15550007001",
        body="where is my order?",
        media=["https://example.invalid/receipt.jpg"],
        tags=["web"],
    )
    await module.main()


async def test_sender_runs_unchanged(local_ray: str, wss_emulator: Emulator) -> None:
    wss_emulator.core.set_config(
        {
            "message_outcomes": {"+15550006002": "undelivered", "+15550006003": "failed"},
            "receive_402": ["premium"],
        }
    )
    labels = {"driver", "driver undelivered", "driver failed", "handler"}
    runs = await compare("sender", wss_emulator, drive_sender, labels, finishing={"driver", "handler"})
    sdk = runs["sdk"]
    assert steps(sdk, "driver")["final"][:4] == ["delivered", "delivered", True, True]
    assert steps(sdk, "driver")["sent"]["tags"] == ["orders"]
    assert steps(sdk, "driver undelivered")["final"][:4] == ["undelivered", "undelivered", True, True]
    assert steps(sdk, "driver failed")["final"][:4] == ["failed", "failed", True, True]
    for label in ("driver", "handler"):
        seen = steps(sdk, label)
        assert seen["unknown call"]["404"] is True and seen["unknown call"]["gone"] is True
        # Logged, stored as JSON and keyed on, e.code is the SDK's int (our runs equal these).
        assert seen["unknown call"]["logged"] == "request failed: code=404"
        assert seen["unknown call"]["repr"] == "404" and seen["unknown call"]["type"] == "int"
        assert (
            seen["unknown call"]["json"] == '{"code": 404, "message": "x"}'
            and seen["unknown call"]["json back"]
        )
        assert seen["unknown call"]["alert"] == "no such call" and seen["invalid"]["alert"] == "bad request"
        assert seen["premium"]["alert"] == "payment required" and not seen["premium"]["retried"]
        assert seen["premium"]["402"] is True and seen["premium"]["4xx"] is True
        assert seen["empty"] == "ValueError"
        assert seen["invalid"]["invalid params"] is True and seen["invalid"]["4xx"] is False
    body, sender, direction, state, context, media, tags, _ = steps(sdk, "handler")["inbound"]
    assert (body, sender, direction, state, context) == (
        "where is my order?",
        "+15550007001",
        "inbound",
        "received",
        "sms",
    )
    assert media == ["https://example.invalid/receipt.jpg"] and tags == ["web"]
