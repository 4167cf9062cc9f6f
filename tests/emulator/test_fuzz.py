"""Hostile frames: every one gets a clear JSON-RPC error, nothing crashes, valid requests still work."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
METHODS = st.sampled_from(
    [
        "calling.play",
        "calling.answer",
        "calling.dial",
        "calling.record.stop",
        "messaging.send",
        "signalwire.receive",
        "calling.connect",
        "calling.detect",
        "nope",
        "calling.play_and_collect",
    ]
)


@st.composite
def hostile_frame(draw: st.DrawFn) -> bytes:
    """A frame that must be answered with a JSON-RPC error (and carries id "f" when it can)."""
    kind = draw(st.integers(0, 5))
    if kind == 0:  # not JSON at all
        return ("{" + draw(st.text(max_size=20)) + "\x00").encode()
    if kind == 1:  # JSON, not an object
        return orjson.dumps(draw(st.lists(JSON, max_size=3) | st.integers(-9, 9) | st.text(max_size=5)))
    if kind == 2:  # params of the wrong type
        params = draw(st.none() | st.lists(JSON, max_size=2) | st.text(max_size=5) | st.integers(-9, 9))
        return orjson.dumps({"jsonrpc": "2.0", "id": "f", "method": draw(METHODS), "params": params})
    if kind == 3:  # neither request nor response, or a bad method
        body = draw(st.dictionaries(st.sampled_from(["jsonrpc", "x", "params"]), JSON, max_size=3))
        if draw(st.booleans()):
            body["method"] = draw(st.sampled_from(["", 5, None, []]))
        return orjson.dumps({**body, "id": "f"})
    if kind == 4:  # a response to nothing
        return orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": draw(st.text(min_size=1, max_size=8).filter(lambda s: not s.startswith("sw-"))),
                "result": draw(JSON),
            }
        )
    # a known method with hostile params and no required fields
    params = draw(
        st.dictionaries(st.sampled_from(["tag", "devices", "play", "context", "contexts"]), JSON, max_size=3)
    )
    return orjson.dumps({"jsonrpc": "2.0", "id": "f", "method": draw(METHODS), "params": params})


async def test_fuzz_hostile_frames(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"journal": False})
    frames: list[bytes] = []

    @settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hostile_frame())
    def collect(frame: bytes) -> None:
        frames.append(frame)

    collect()
    assert len(frames) >= 10_000
    before = len(client.frames)
    for frame in frames:
        await client.send(frame)
    await client.send(
        orjson.dumps({"jsonrpc": "2.0", "id": "last", "method": "signalwire.ping", "params": {}})
    )
    await client.wait_frame(lambda f: f.get("id") == "last", timeout=30, start=before)
    answers = [f for f in client.frames[before:] if "method" not in f and f.get("id") != "last"]
    errors = [f for f in answers if "error" in f]
    # Every hostile frame got an answer; those that were not valid requests got an error.
    assert len(answers) == len(frames)
    codes = {f["error"]["code"] for f in errors}
    assert codes <= {-32700, -32600, -32602, -32601, -32603}
    assert -32603 not in codes, [f for f in errors if f["error"]["code"] == -32603][:3]
    assert emulator.core.stats_counters["protocol_violations"] >= len(frames) // 3
    assert not client.closed.is_set()
    assert (await client.request("signalwire.receive", {"contexts": ["after"]}))["code"] == "200"


async def test_binary_and_oversize_frames(emulator: Emulator, client_factory) -> None:
    client = await client_factory()
    await client.send(b"\x00\x01binary", text=False)
    answer = await client.wait_frame(lambda f: "error" in f)
    assert answer["error"]["code"] == -32600
    assert (await client.request("signalwire.ping", {}))["timestamp"] > 0
    big = await client_factory()
    await big.send(b'{"x":"' + b"a" * (10 * 1024 * 1024) + b'"}')
    await big.closed.wait()
    assert big.ws is not None and big.ws.close_code == 1009  # message too big
    assert (await client.request("signalwire.ping", {}))["timestamp"] > 0
