"""The client's own WebSocket framing agrees with websockets' (RFC 6455): frames it
writes parse as the same text, and what it locates is where websockets finds it."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import apply_mask

from relay_actors.protocol import wsframes


def _parse_all(data: bytes, *, mask: bool) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while not reader.buffer == b"":
        parser = Frame.parse(reader.read_exact, mask=mask)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_masked_text_frames_parse_as_websockets_reads_them(size: int) -> None:
    payloads = [b"a" * size, b'{"x":1}', "é".encode() * (size // 2)]
    masks = os.urandom(4 * len(payloads))
    data = wsframes.encode_masked_text(payloads, masks, apply_mask)
    frames = _parse_all(data, mask=True)
    assert [(f.opcode, f.fin, bytes(f.data)) for f in frames] == [(Opcode.TEXT, True, p) for p in payloads]
    # Each frame carries its own key, in the order drawn.
    assert data[2 if size < 126 else 4 if size < 65536 else 10 :].startswith(masks[:4])


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535, 65536, 70000])
def test_locate_finds_a_server_frame_and_its_payload(size: int) -> None:
    payload = b"p" * size
    data = b"zz" + Frame(Opcode.TEXT, payload).serialize(mask=False) + b"tail"
    first, start, end = wsframes.locate(data, 2) or (None, 0, 0)
    assert first in wsframes.PLAIN_DATA
    assert data[start:end] == payload
    assert data[end:] == b"tail"
    if size:
        # A payload still arriving: the end lies beyond what was read.
        assert wsframes.locate(data[: end - 1], 2) == (first, start, end)


def test_an_incomplete_header_is_not_located() -> None:
    long = Frame(Opcode.TEXT, b"x" * 70000).serialize(mask=False)
    medium = Frame(Opcode.TEXT, b"x" * 300).serialize(mask=False)
    assert wsframes.locate(long[:1], 0) is None
    assert wsframes.locate(long[:9], 0) is None  # 8-byte length cut short
    assert wsframes.locate(medium[:3], 0) is None  # 2-byte length cut short


@pytest.mark.parametrize(
    "frame",
    [
        Frame(Opcode.TEXT, b"part", fin=False),
        Frame(Opcode.CONT, b"rest"),
        Frame(Opcode.PING, b"hi"),
        Frame(Opcode.CLOSE, b"\x03\xe8"),
    ],
    ids=["fragment", "continuation", "ping", "close"],
)
def test_frames_other_than_plain_data_are_left_to_websockets(frame: Frame) -> None:
    data = frame.serialize(mask=False)
    first, start, end = wsframes.locate(data, 0) or (None, 0, 0)
    assert first not in wsframes.PLAIN_DATA
    assert (start, end) == (2, len(data))


def test_a_frame_with_a_reserved_bit_is_left_to_websockets() -> None:
    data = bytes((0x80 | 0x40 | 0x1, 1)) + b"x"  # FIN, RSV1 (no extension agreed), text
    first, start, end = wsframes.locate(data, 0) or (None, 0, 0)
    assert first not in wsframes.PLAIN_DATA
    assert (start, end) == (2, 3)


def test_a_masked_server_frame_is_never_plain() -> None:
    data = Frame(Opcode.TEXT, b"masked").serialize(mask=True)
    first, start, end = wsframes.locate(data, 0) or (None, 0, 0)
    assert first not in wsframes.PLAIN_DATA
    assert (start, end) == (6, len(data))
