"""The WebSocket frames of a RELAY client's hot path (RFC 6455 §5.2), sans-IO.

Nearly every frame a RELAY client reads is one unfragmented, unmasked text frame, and
nearly every frame it writes is one masked text frame. websockets parses each through a
chain of generators and writes each through a ``Frame`` object, a ``BytesIO`` and a
``getrandom`` call for its mask; these two functions do the same for those plain frames
in a few operations, and leave everything else (control frames, fragments, anything
malformed or oversized) to websockets, which decides what it means.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PLAIN_DATA", "encode_masked_text", "locate"]

#: First header byte of a plain data frame: FIN, no RSV bits, opcode text (1) or binary (2).
PLAIN_DATA = (0x81, 0x82)


def locate(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """The frame starting at ``buf[pos]``: ``(first header byte, payload start, payload
    end)`` with the second byte's mask bit folded in (a masked frame's first byte is
    returned as 0, so it is never taken for a plain one), or None while its header is
    incomplete. ``end`` may lie beyond ``buf``: the payload has not all arrived."""
    size = len(buf)
    if size - pos < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        start = pos + 4
        if start > size:
            return None
        length = int.from_bytes(buf[pos + 2 : start], "big")
    elif length == 127:
        start = pos + 10
        if start > size:
            return None
        length = int.from_bytes(buf[pos + 2 : start], "big")
    if second & 0x80:
        start += 4  # a mask key (a server must not mask: websockets refuses the frame)
        first = 0
    return first, start, start + length


def encode_masked_text(
    payloads: list[bytes], masks: bytes, apply_mask: Callable[[bytes, bytes], bytes]
) -> bytes:
    """``payloads`` as masked text frames, back to back, frame ``i`` masked with
    ``masks[4 * i : 4 * i + 4]`` (the caller draws them from a strong source, as the RFC
    asks: ``os.urandom(4 * len(payloads))``) by ``apply_mask(payload, mask)`` (websockets'
    C implementation, in the connection)."""
    parts: list[bytes] = []
    append = parts.append
    for i, payload in enumerate(payloads):
        length = len(payload)
        if length < 126:
            append(bytes((0x81, 0x80 | length)))
        elif length < 65536:
            append(b"\x81\xfe" + length.to_bytes(2, "big"))
        else:
            append(b"\x81\xff" + length.to_bytes(8, "big"))
        mask = masks[4 * i : 4 * i + 4]
        append(mask)
        append(apply_mask(payload, mask))
    return b"".join(parts)
