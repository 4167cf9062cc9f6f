"""Seeded hostile frames, generated fast, for the fuzz tests.

Hypothesis spends ~10 ms drawing one nested frame, which made 10,000 of them the slowest
part of the suite. The fuzz tests keep a hypothesis pass (it shrinks a failure to its
smallest frame) and add this generator, which draws the same families of frames from
``random.Random(seed)`` at a few µs each: many more hostile frames per second of CI, and
a failing frame is reproduced from its seed and index.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

#: Characters a hostile peer likes: controls, quotes, escapes, non-BMP, RTL, combining marks.
_ALPHABET = "ab_-.:/ \x00\x01\x1f\"\\'{}[]é√🙂\u202e\u0301\uffff"
#: Integers at the edges of what JSON readers and int64 fields handle.
_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**53, -(2**53), 2**63 - 1, -(2**63)]
_FLOATS = [0.0, -0.0, 1.5, 1e308, -1e-308, float("inf"), float("-inf")]


def text(rng: random.Random, max_size: int = 20) -> str:
    """A short string, often empty, from characters that break naive parsers."""
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, max_size)))


def scalar(rng: random.Random) -> Any:
    """A JSON scalar of any type, biased to edge values."""
    kind = rng.randrange(6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(_INTS) if rng.random() < 0.5 else rng.randint(-(2**63), 2**63 - 1)
    if kind == 3:
        return rng.choice(_FLOATS) if rng.random() < 0.3 else rng.uniform(-1e9, 1e9)
    return text(rng)


def value(rng: random.Random, depth: int = 3) -> Any:
    """Any JSON value: scalars, and lists and objects nested up to ``depth``."""
    kind = rng.randrange(4) if depth > 0 else 0
    if kind <= 1:
        return scalar(rng)
    if kind == 2:
        return [value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {text(rng, 10): value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def keyed(rng: random.Random, keys: list[str], max_size: int = 6, depth: int = 2) -> dict[str, Any]:
    """An object whose keys are real field names and whose values are anything."""
    return {rng.choice(keys): value(rng, depth) for _ in range(rng.randint(0, max_size))}


def maybe(rng: random.Random, usual: Any, depth: int = 2) -> Any:
    """The expected value most of the time, else anything."""
    return usual if rng.random() < 0.6 else value(rng, depth)


def frames(seed: int, count: int, families: list[Any]) -> Iterator[tuple[int, bytes]]:
    """``(index, frame)`` for ``count`` frames, each from a family picked at random;
    a family is ``f(rng) -> bytes``."""
    rng = random.Random(seed)
    for index in range(count):
        yield index, rng.choice(families)(rng)


def raw_bytes(rng: random.Random) -> bytes:
    """Not JSON, or not UTF-8, or truncated JSON."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 64))
    if kind == 1:
        return text(rng, 64).encode()
    whole = orjson.dumps({"jsonrpc": "2.0", "id": text(rng, 5), "method": "signalwire.event"})
    return whole[: rng.randint(0, len(whole) - 1)]


def dumps(obj: Any) -> bytes:
    """orjson's encoding; integers beyond 64 bits (which orjson refuses) become strings."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return orjson.dumps(str(obj))
