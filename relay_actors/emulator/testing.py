"""Test helpers: a minimal raw RELAY client speaking JSON-RPC over a real WebSocket.

It acks events and answers pings by itself (switchable), keeps every received
frame, and lets a test wait on a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..protocol.constants import AGENT, METHOD_CONNECT, METHOD_EVENT, PROTOCOL_VERSION

__all__ = ["FAST_DURATIONS", "RawClient", "RpcError", "wait_until"]

#: Short phase durations for tests (seconds): every scripted operation ends quickly.
FAST_DURATIONS: dict[str, float] = {
    "play": 0.05,
    "record": 0.1,
    "collect": 0.05,
    "detect": 0.05,
    "fax": 0.05,
    "tap": 0.05,
    "stream": 0.05,
    "pay": 0.05,
    "transcribe": 0.05,
    "ring": 0.01,
    "answer": 0.01,
    "connect": 0.01,
    "message": 0.005,
    "step": 0.005,
    "send_digits": 0.01,
}


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.code = error.get("code")
        super().__init__(f"{error.get('code')}: {error.get('message')}")


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until truthy (returned) or raise TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class RawClient:
    """A bare RELAY client for tests."""

    def __init__(
        self, url: str, *, ca_file: str | None = None, auto_ack: bool = True, auto_pong: bool = True
    ):
        self.url = url
        self.ssl: ssl.SSLContext | bool | None = (
            ssl.create_default_context(cafile=ca_file)
            if ca_file
            else (True if url.startswith("wss") else None)
        )
        self.auto_ack = auto_ack
        self.auto_pong = auto_pong
        self.ws: ClientConnection | None = None
        self.frames: list[dict[str, Any]] = []  # every parsed frame received, in order
        self.raw: list[str | bytes] = []
        self.protocol: str | None = None
        self.authorization_state: str | None = None
        self.closed = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._new = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> RawClient:
        """Open the socket (no RELAY connect yet)."""
        self.ws = await connect(self.url, ssl=self.ssl, ping_interval=None, max_size=None, compression=None)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aenter__(self) -> RawClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket and stop reading."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self.raw.append(raw)
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    frame = {"unparseable": raw}
                if not isinstance(frame, dict):
                    frame = {"non_object": frame}
                self.frames.append(frame)
                method = frame.get("method")
                if method is not None and "id" in frame:
                    if method == METHOD_EVENT:
                        params = frame.get("params", {})
                        if params.get("event_type") == "signalwire.authorization.state":
                            self.authorization_state = params["params"]["authorization_state"]
                        if self.auto_ack:
                            await self.send(orjson.dumps({"jsonrpc": "2.0", "id": frame["id"], "result": {}}))
                    elif self.auto_pong:
                        await self.send(orjson.dumps({"jsonrpc": "2.0", "id": frame["id"], "result": {}}))
                elif "id" in frame and frame["id"] in self._pending:
                    future = self._pending.pop(frame["id"])
                    if not future.done():
                        future.set_result(frame)
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._new.set()

    async def send(self, data: str | bytes | dict[str, Any], text: bool = True) -> None:
        """Send a frame as given (dicts are JSON-encoded)."""
        assert self.ws is not None
        if isinstance(data, dict):
            data = orjson.dumps(data)
        await self.ws.send(data, text=text)

    async def call(
        self, method: str, params: Any = None, timeout: float = 5.0, **extra: Any
    ) -> dict[str, Any]:
        """Send a request and return the whole answer frame (result or error)."""
        request_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, **extra}
        if params is not None:
            frame["params"] = params
        await self.send(frame)
        return await asyncio.wait_for(future, timeout)

    async def request(self, method: str, params: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request; return its ``result`` or raise :class:`RpcError`."""
        answer = await self.call(method, params, timeout)
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer["result"]

    async def connect(
        self,
        project: str | None = None,
        token: str | None = None,
        *,
        jwt: str | None = None,
        contexts: list[str] | None = None,
        protocol: str | None = None,
        authorization_state: str | None = None,
    ) -> dict[str, Any]:
        """``signalwire.connect``; returns the result (raises :class:`RpcError` on rejection)."""
        auth = {"jwt_token": jwt} if jwt is not None else {"project": project, "token": token}
        params: dict[str, Any] = {
            "version": PROTOCOL_VERSION,
            "agent": AGENT,
            "event_acks": True,
            "authentication": auth,
        }
        if contexts:
            params["contexts"] = contexts
        if protocol:
            params["protocol"] = protocol
        if authorization_state:
            params["authorization_state"] = authorization_state
        result = await self.request(METHOD_CONNECT, params)
        self.protocol = result["protocol"]
        return result

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Inner params (plus ``event_type``) of every event received so far."""
        out = []
        for frame in self.frames:
            if frame.get("method") == METHOD_EVENT:
                params = frame.get("params", {})
                if event_type is None or params.get("event_type") == event_type:
                    out.append({"event_type": params.get("event_type"), **params.get("params", {})})
        return out

    async def wait_frame(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 5.0, start: int = 0
    ) -> dict[str, Any]:
        """The first received frame (from index ``start``) matching ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = start
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if predicate(frame):
                    return frame
            if self.closed.is_set():
                raise ConnectionError("socket closed before the frame arrived")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("frame not received in time")
            self._new.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def wait_event(self, event_type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first event of ``event_type`` whose inner params contain ``match``."""

        def matches(frame: dict[str, Any]) -> bool:
            if frame.get("method") != METHOD_EVENT:
                return False
            params = frame.get("params", {})
            inner = params.get("params", {})
            return params.get("event_type") == event_type and all(inner.get(k) == v for k, v in match.items())

        frame = await self.wait_frame(matches, timeout)
        return {"event_type": event_type, **frame["params"]["params"]}
