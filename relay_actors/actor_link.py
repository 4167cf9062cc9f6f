"""A direct stream between two actors, for the per-call data path.

A Ray actor call costs about half a millisecond of CPU at each end (task
submission, serialization, scheduling) — measured as the largest item in the
connection actor's profile. Calls need a dozen messages between the
connection actor and their CallActor, so at steady load, where batches stay
small, Ray calls would cost more than everything else together. Ray keeps
doing what it is good at — placing, restarting, finding and health-checking
actors, and the control calls — while events, requests and results flow over
one TCP stream per (connection actor, CallActor) pair: length-prefixed pickled
messages, written in one go per event-loop iteration (group commit, no timer).

The CallActor listens on its node's address; the connection actor connects and
proves it belongs to the app with an HMAC of a per-app secret kept in Ray's
GCS key-value store (so nothing else on the network can talk to it, and the
pickled payloads come only from our own actors).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import pickle
import struct
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Link", "LinkClosed", "LinkServer", "connect", "new_secret"]

log = logging.getLogger("relay_actors.actor_link")

_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 256 * 1024 * 1024
_HELLO_TIMEOUT = 10.0


class LinkClosed(ConnectionError):
    """The stream to the other actor is gone (it died, restarted, or closed the link)."""


def new_secret() -> str:
    return os.urandom(32).hex()


def _proof(secret: str, nonce: bytes) -> bytes:
    return hmac.new(bytes.fromhex(secret), nonce, hashlib.sha256).digest()


class Link:
    """One framed stream. :meth:`send` queues a message; everything queued in one
    loop iteration leaves in a single write. :meth:`recv` returns the next message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[bytes] = []
        self._scheduled = False
        self.closed = False
        self.sent = 0
        self.writes = 0

    def send(self, message: Any) -> None:
        if self.closed:
            raise LinkClosed("the link is closed")
        data = pickle.dumps(message, protocol=5)
        self._pending.append(_HEADER.pack(len(data)))
        self._pending.append(data)
        self.sent += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def flush(self) -> bool:
        """Write what is queued now. True when every byte reached the kernel (nothing
        waits in user space): then it arrives even if this process dies next."""
        self._flush()
        transport = self._writer.transport
        return not self.closed and transport is not None and transport.get_write_buffer_size() == 0

    def _flush(self) -> None:
        self._scheduled = False
        if self.closed or not self._pending:
            return
        chunks, self._pending = self._pending, []
        try:
            self._writer.write(b"".join(chunks))
            self.writes += 1
        except Exception as exc:  # the transport is gone: the reader will see it too
            log.debug("link write failed: %r", exc)
            self.close()

    async def recv(self) -> Any:
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > _MAX_MESSAGE:
                raise LinkClosed(f"message of {size} bytes is over the limit")
            data = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close()
            raise LinkClosed(f"the link closed: {type(exc).__name__}") from None
        return pickle.loads(data)

    async def drain(self) -> None:
        """Wait while the kernel buffer is over its high-water mark (backpressure)."""
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.close()


class LinkServer:
    """Accepts links from the app's connection actors (in a CallActor)."""

    def __init__(self, secret: str, on_link: Callable[[Link, Any], Awaitable[None]]) -> None:
        self._secret = secret
        self._on_link = on_link
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, 0)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return host, self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer)
        nonce = os.urandom(16)
        try:
            link.send(("challenge", nonce))
            hello = await asyncio.wait_for(link.recv(), _HELLO_TIMEOUT)
        except (LinkClosed, asyncio.TimeoutError):
            link.close()
            return
        except Exception:  # not even a frame of ours
            link.close()
            return
        if (
            not isinstance(hello, tuple)
            or len(hello) != 3
            or hello[0] != "hello"
            or not isinstance(hello[1], bytes)
            or not hmac.compare_digest(hello[1], _proof(self._secret, nonce))
        ):
            log.warning("rejected a link that did not prove it belongs to the app")
            link.close()
            return
        await self._on_link(link, hello[2])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def connect(host: str, port: int, secret: str, hello: Any) -> Link:
    """Open a link to a :class:`LinkServer`, answering its challenge; ``hello`` is
    passed to the server's ``on_link``."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _HELLO_TIMEOUT)
    link = Link(reader, writer)
    try:
        challenge = await asyncio.wait_for(link.recv(), _HELLO_TIMEOUT)
        if not isinstance(challenge, tuple) or challenge[0] != "challenge":
            raise LinkClosed("unexpected greeting")
        link.send(("hello", _proof(secret, challenge[1]), hello))
    except BaseException:
        link.close()
        raise
    return link
