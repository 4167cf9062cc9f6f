"""Hostile frames: every one gets a clear JSON-RPC error, nothing crashes, valid requests still work."""

from __future__ import annotations

import random

import hostile_frames as hf
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
    # Hypothesis shrinks a failing frame; the seeded generator adds many more frames per
    # second of CI (hypothesis spends milliseconds drawing one): 300 + 10,700, the same
    # 11,000 frames as 1,000 + 10,000 in a third of the time.
    frames: list[bytes] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hostile_frame())
    def collect(frame: bytes) -> None:
        frames.append(frame)

    collect()
    frames += [frame for _, frame in hf.frames(5, 10_700, SEEDED_FAMILIES)]
    await all_answered_with_errors(emulator, client, frames)


async def all_answered_with_errors(emulator: Emulator, client: RawClient, frames: list[bytes]) -> None:
    emulator.core.set_config({"journal": False})
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


# The families of ``hostile_frame`` above, drawn by a seeded generator.
_METHODS = list(METHODS.elements)  # type: ignore[attr-defined]


def _wrong_params(rng: random.Random) -> bytes:
    params = rng.choice([None, [hf.value(rng, 1)], hf.text(rng, 5), rng.randint(-9, 9)])
    return hf.dumps({"jsonrpc": "2.0", "id": "f", "method": rng.choice(_METHODS), "params": params})


def _no_request(rng: random.Random) -> bytes:
    body = hf.keyed(rng, ["jsonrpc", "x", "params"], 3)
    if rng.random() < 0.5:
        body["method"] = rng.choice(["", 5, None, []])
    return hf.dumps({**body, "id": "f"})


def _stray_response(rng: random.Random) -> bytes:
    fid = "r" + hf.text(rng, 7)  # never "sw-…", the emulator's own request ids
    return hf.dumps({"jsonrpc": "2.0", "id": fid, "result": hf.value(rng)})


def _hostile_params(rng: random.Random) -> bytes:
    params = hf.keyed(rng, ["tag", "devices", "play", "context", "contexts"], 3)
    return hf.dumps({"jsonrpc": "2.0", "id": "f", "method": rng.choice(_METHODS), "params": params})


SEEDED_FAMILIES = [
    lambda rng: ("{" + hf.text(rng) + "\x00").encode(),
    lambda rng: hf.dumps(rng.choice([[hf.value(rng) for _ in range(rng.randint(0, 3))], 7, "x"])),
    _wrong_params,
    _no_request,
    _stray_response,
    _hostile_params,
]


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
