"""The RELAY WebSocket endpoint: one :class:`Connection` per socket, JSON-RPC in and out.

The per-frame path is kept lean (orjson, one ``dict`` lookup for acks, a deque
drained by one writer task per socket) so one core sustains tens of thousands
of acked events per second.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ..errors import ProtocolError
from ..protocol import constants as c
from ..protocol.codec import (
    MAX_FRAME_SIZE,
    ErrorResponse,
    Request,
    decode,
    encode_error,
    encode_result,
    wire_logger,
)
from .rpc import InvalidParams

if TYPE_CHECKING:
    from websockets.http11 import Request as HttpRequest
    from websockets.http11 import Response as HttpResponse

    from .core import EmulatorCore
    from .session import Session

__all__ = ["Connection", "RelayServer"]

#: JSON-RPC error codes per codec ProtocolError code.
_ERROR_CODES = {
    "invalid_json": -32700,
    "not_an_object": -32600,
    "invalid_frame": -32600,
    "invalid_params": -32602,
    "frame_too_large": -32600,
}
_AUTH_FAILED = {"signalwire_error_code": "AUTH_REQUIRED"}
_INVALID_PARAMS = {"signalwire_error_code": "INVALID_PARAMS"}
_connection_numbers = itertools.count(1)


def _loose_id(obj: Any) -> str | int | None:
    """The id of a frame that failed validation, if it has a usable one (to echo it)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None


#: Most frames the writer puts in one socket write.
_WRITE_BATCH = 128


class Connection:
    """One WebSocket: decodes frames, dispatches requests, writes frames in order."""

    def __init__(self, ws: ServerConnection, core: EmulatorCore) -> None:
        self.ws = ws
        self.core = core
        self.session: Session | None = None
        self.key = f"conn-{next(_connection_numbers)}"
        self._out: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._low = asyncio.Event()
        self._closing = False
        self._closed = False

    # --- SessionPeer ------------------------------------------------------------
    def push(self, frame: bytes) -> None:
        """Queue one frame for the writer (order is preserved)."""
        self._out.append(frame)
        self._wakeup.set()

    def wake(self) -> None:
        """Make the writer look at its queue again (after a silent period)."""
        self._wakeup.set()

    def abort(self) -> None:
        """Drop the TCP connection with no close handshake."""
        self._closed = True
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    def close_gracefully(self) -> None:
        """Close with a normal close frame once every queued frame is written."""
        self._closing = True
        self._wakeup.set()

    async def drained(self, limit: int) -> None:
        """Wait until at most ``limit`` frames are queued (flow control for floods)."""
        while len(self._out) > limit and not self._closed:
            self._low.clear()
            await self._low.wait()

    # --- writing ----------------------------------------------------------------
    async def writer(self) -> None:
        """Send queued frames until the socket closes."""
        out, ws, core = self._out, self.ws, self.core
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while out:
                    session = self.session
                    if session is not None and session.silent:
                        break
                    # Up to _WRITE_BATCH frames in one write and one drain: websockets'
                    # per-message send costs more than the frame itself.
                    sent = 0
                    async with ws.send_context():
                        while out and sent < _WRITE_BATCH:
                            if session is not None and session.silent:
                                break
                            frame = out.popleft()
                            if core.config.journal:
                                core.journal.record(session.protocol if session else self.key, "out", frame)
                            ws.protocol.send_text(frame)
                            sent += 1
                    core.frames_out += sent
                    self._low.set()
                self._low.set()
                if self._closing and not out:
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            self._low.set()

    def respond(self, request_id: str | None, result: Any) -> None:
        """Queue a success answer, applying the session's response faults."""
        if request_id is None:
            return
        self._respond_frame(encode_result(request_id, result))

    def fail(self, request_id: Any, code: int, message: str, data: Any = None) -> None:
        """Queue an error answer."""
        self._respond_frame(encode_error(request_id, code, message, data))

    def _respond_frame(self, frame: bytes) -> None:
        session = self.session
        if session is not None:
            faults = session.faults
            if faults.drop_responses > 0:
                faults.drop_responses -= 1
                return
            if faults.response_delay > 0:
                asyncio.get_running_loop().call_later(faults.response_delay, self.push, frame)
                return
        self.push(frame)

    def violation(self, request_id: Any, code: int, message: str) -> None:
        """Count a protocol violation and answer it with a JSON-RPC error."""
        self.core.count("protocol_violations")
        self.fail(request_id, code, message)

    # --- reading ----------------------------------------------------------------
    def on_frame(self, raw: str | bytes) -> None:
        """Handle one inbound frame; never raises."""
        core = self.core
        core.frames_in += 1
        session = self.session
        if core.config.journal:
            core.journal.record(session.protocol if session else self.key, "in", raw)
        if not isinstance(raw, str):
            self.violation(None, -32600, "binary frames are not supported: send JSON-RPC as text frames")
            return
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.violation(None, -32700, "Parse error: frame is not valid JSON")
            return
        # Fast path: the ack of an event (the hottest frame by far).
        if type(obj) is dict and "result" in obj and "method" not in obj and session is not None:
            ack_id = obj.get("id")
            if type(ack_id) is str and session.ack(ack_id):
                return
        try:
            frame = decode(raw)
        except ProtocolError as exc:
            self.violation(_loose_id(obj), _ERROR_CODES.get(exc.failure or "", -32600), exc.message)
            return
        if not isinstance(frame, Request):
            if session is not None and frame.id is not None and session.ack(frame.id):
                if isinstance(frame, ErrorResponse):
                    core.count("error_acks")
                return
            if frame.id is not None and frame.id.startswith("sw-"):
                core.count("late_acks")  # a duplicate or post-resume ack of our own request
                return
            self.violation(frame.id, -32600, f"Invalid Request: no outstanding request has id {frame.id!r}")
            return
        try:
            self._dispatch(frame)
        except InvalidParams as exc:
            core.count("invalid_params")
            self.fail(frame.id, -32602, f"Invalid params: {exc}", _INVALID_PARAMS)
        except Exception as exc:  # a handler bug must never take the socket down
            core.count("internal_errors")
            self.fail(frame.id, -32603, f"Internal error: {type(exc).__name__}")

    def _dispatch(self, req: Request) -> None:
        method, params = req.method, req.params
        if method == c.METHOD_CONNECT:
            self._connect(req)
            return
        session = self.session
        if session is None:
            self.core.count("requests_before_connect")
            self.fail(req.id, -32000, "Not authenticated: send signalwire.connect first", _AUTH_FAILED)
            return
        if method.startswith("calling."):
            call_id = params.get("call_id")
            if call_id is not None and not isinstance(call_id, str):
                raise InvalidParams("call_id must be a string")
            session.begin_batch()
            try:
                result = self.core.calls.handle(session, method[8:], params)
                self.respond(req.id, result)
            finally:
                session.end_batch()
        elif method == c.METHOD_PING:
            if session.answer_pings:
                self.respond(req.id, {"timestamp": time.time()})
        elif method == "messaging.send":
            before = self.core.config.message_states_before_result
            if not before:
                session.begin_batch()
            try:
                self.respond(req.id, self.core.messaging.send(session, params))
            finally:
                if not before:
                    session.end_batch()
        elif method in (c.METHOD_RECEIVE, c.METHOD_UNRECEIVE):
            self.respond(req.id, self._receive(session, method, params))
        else:
            self.core.count("unknown_methods")
            self.fail(req.id, -32601, f"Method not found: {method}")

    def _receive(self, session: Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
        contexts = params.get("contexts")
        if not isinstance(contexts, list) or not all(isinstance(x, str) for x in contexts):
            raise InvalidParams("contexts must be a list of strings")
        if method == c.METHOD_UNRECEIVE:
            session.contexts.difference_update(contexts)
            return {"code": "200", "message": "Unreceiving events"}
        blocked = self.core.config.receive_402
        if "*" in blocked or any(ctx in blocked for ctx in contexts):
            return {"code": "402", "message": "Payment required"}
        session.contexts.update(contexts)
        return {"code": "200", "message": "Receiving events"}

    def _reject(self, req: Request) -> None:
        self.core.count("auth_failures")
        self.push(encode_error(req.id, -32000, "Authentication failed", _AUTH_FAILED))
        self.close_gracefully()

    def _connect(self, req: Request) -> None:
        core, params = self.core, req.params
        auth = params.get("authentication")
        project: str | None = None
        if isinstance(auth, dict):
            if "jwt_token" in auth:
                project = core.credentials.verify_jwt(auth.get("jwt_token"))
            elif core.credentials.check_token(auth.get("project"), auth.get("token")):
                project = auth["project"]
        if project is None:
            self._reject(req)
            return
        raw_contexts = params.get("contexts")
        contexts = (
            {x for x in raw_contexts if isinstance(x, str)} if isinstance(raw_contexts, list) else set()
        )
        protocol = params.get("protocol")
        restored = False
        if protocol:
            session = core.sessions.get(protocol) if isinstance(protocol, str) else None
            if session is None or session.closed or session.project != project:
                self._reject(req)
                return
            state = params.get("authorization_state")
            if state is not None and core.credentials.check_authorization_state(state) != protocol:
                core.count("invalid_authorization_states")  # ignored: credentials decide
            old_peer = session.peer
            if old_peer is not None and old_peer is not self:
                session.detach(old_peer)
                old_peer.abort()
            restored = True
            session.contexts |= contexts
        else:
            session = core.new_session(project, contexts)
        if self.session is not None and self.session is not session:
            self.session.detach(self)
        core.journal.rename(self.key, session.protocol)
        self.session = session
        self.push(
            encode_result(
                req.id or "",
                {
                    "identity": session.identity,
                    "nodeid": core.node_id,
                    "master_nodeid": core.master_node_id,
                    "protocol": session.protocol,
                    "session_restored": restored,
                    "authorization": {"project": project, "signature": session.identity.replace("-", "")},
                },
            )
        )
        core.count("resumes" if restored else "connects")
        session.attach(self)
        session.emit(
            c.EVENT_AUTHORIZATION_STATE,
            {"authorization_state": core.credentials.make_authorization_state(session.protocol)},
        )

    async def serve(self) -> None:
        """Read frames until the socket closes, then detach the session."""
        writer = asyncio.get_running_loop().create_task(self.writer())
        try:
            async for raw in self.ws:
                self.on_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            if self.session is not None:
                self.session.detach(self)
            writer.cancel()
            self._low.set()


class RelayServer:
    """The listening WebSocket server (ws:// or wss://, any path)."""

    def __init__(self, core: EmulatorCore, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._server: Server | None = None
        self.connections: set[Connection] = set()

    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        if self.core.refuse_handshakes > 0:
            self.core.refuse_handshakes -= 1
            self.core.count("handshakes_refused")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service unavailable\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, self.core)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def start(self) -> None:
        """Listen; ``port`` 0 picks a free port (read :attr:`port` afterwards)."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            max_size=MAX_FRAME_SIZE,
            ping_interval=None,  # RELAY liveness is JSON-RPC level
            compression=None,  # per-frame deflate would dominate the event path
            process_request=self._process_request,
            # Frame records without content: connect frames and authorization states are credentials.
            logger=wire_logger("relay_actors.emulator.websockets"),
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every socket and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
