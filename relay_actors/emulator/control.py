"""The HTTP control API (aiohttp). Documented in CONTROL_API.md.

It can inject calls, read the journal and add credentials, so it is guarded:
it listens on loopback unless given a bearer token (checked on every request),
answers only requests whose ``Host`` is loopback or the address it is bound to
(a web page in a browser on this machine cannot reach it by DNS rebinding),
and takes POST bodies only as ``application/json`` (a page cannot send that
cross-origin without a CORS preflight, which this API never grants).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..config import host_name, is_loopback
from ..errors import ConfigError
from .core import EmulatorCore, UnknownSession

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["CONTROL_TOKEN_ENV", "ControlApi", "allowed_host", "check_control_bind"]

#: Environment variable the CLI and the load generator read the control token from.
CONTROL_TOKEN_ENV = "RELAY_EMULATOR_CONTROL_TOKEN"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _refuse(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": message}), status=status, content_type="application/json", headers=headers
    )


async def _body(request: web.Request) -> dict[str, Any]:
    # The guard already required ``application/json`` on every POST.
    raw = await request.read()
    if not raw.strip():
        return {}  # fields are all optional on body-less operations (drop, refuse, ...)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"body must be a JSON object, not a JSON {type(data).__name__}")
    return data


def check_control_bind(host: str, token: str | None) -> None:
    """Refuse to serve the control API beyond this machine without a token.

    Raises:
        ConfigError: ``host`` is not loopback and ``token`` is empty.
    """
    if not token and not is_loopback(host):
        raise ConfigError(
            f"the control API would listen on {host!r}, which is not loopback, without a token: "
            f"give one (control_token=..., --control-token or {CONTROL_TOKEN_ENV}) "
            "or bind it to 127.0.0.1 (control_host=... or --control-host)"
        )


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def allowed_host(header: str, bind_host: str) -> bool:
    """Whether a request's ``Host`` header may reach an API bound to ``bind_host``:
    a loopback name or address, the bound address itself, or, when bound to a
    wildcard address, any IP literal (a DNS-rebinding page's Host is its own DNS
    name, never an IP literal)."""
    if not header:
        return False
    if is_loopback(header):
        return True
    name = host_name(header).lower().rstrip(".")
    bound = host_name(bind_host).lower()
    if name == bound:
        return True
    bound_ip = _ip(bound)
    return bound_ip is not None and bound_ip.is_unspecified and _ip(name) is not None


def _guard(bind_host: str, token: str | None) -> Any:
    """The middleware checking Host, then the bearer token, then the POST content type."""
    expected = f"Bearer {token}".encode() if token else b""

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        header = request.headers.get("Host", "")
        if not allowed_host(header, bind_host):
            return _refuse(
                403, f"Host {header!r} is not allowed: use the control_url (loopback or the bound address)"
            )
        if token:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _refuse(
                    401,
                    "missing or wrong token: send the header 'Authorization: Bearer <control token>'",
                    **{"WWW-Authenticate": 'Bearer realm="relay-emulator"'},
                )
        if request.method == "POST" and request.content_type != "application/json":
            return _refuse(
                415,
                f"POST bodies must be JSON objects sent as Content-Type: application/json, "
                f"not {request.content_type!r}",
            )
        return await handler(request)

    return guard


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except UnknownSession as exc:
        return _json({"error": f"unknown session {exc.args[0]}"}, 404)
    except (ValueError, TypeError, KeyError) as exc:
        return _json({"error": str(exc)}, 400)


#: Request body field → keyword of the core operation, for inject calls / messages.
_CALL_OPTIONS = (
    ("from_number", "from"),
    ("to_number", "to"),
    ("ring_timeout", "ring_timeout"),
    ("hangup_after", "hangup_after"),
    ("collect", "collect"),
    ("detect", "detect"),
    ("inputs", "inputs"),
)
_MESSAGE_OPTIONS = (
    ("from_number", "from"),
    ("to_number", "to"),
    ("body", "body"),
    ("media", "media"),
    ("tags", "tags"),
)


def _given(body: dict[str, Any], fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The keyword arguments for the fields the request body gives."""
    return {key: body[src] for key, src in fields if body.get(src) is not None}


class ControlApi:
    """aiohttp application driving an :class:`EmulatorCore`."""

    def __init__(
        self,
        core: EmulatorCore,
        info: Callable[[], dict[str, Any]],
        *,
        bind_host: str = "127.0.0.1",
        token: str | None = None,
    ) -> None:
        check_control_bind(bind_host, token)
        self.core = core
        self._info = info
        self.bind_host = bind_host
        self.app = web.Application(middlewares=[_guard(bind_host, token), _errors])
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/info", self.info)
        r.add_get("/stats", self.stats)
        r.add_get("/config", self.get_config)
        r.add_post("/config", self.post_config)
        r.add_post("/credentials", self.add_credentials)
        r.add_post("/jwt", self.make_jwt)
        r.add_get("/sessions", self.sessions)
        r.add_get("/sessions/{protocol}", self.session)
        r.add_post("/sessions/{protocol}/event", self.push_event)
        r.add_post("/sessions/{protocol}/raw", self.push_raw)
        r.add_post("/sessions/{protocol}/drop", self.drop)
        r.add_post("/sessions/{protocol}/disconnect", self.disconnect)
        r.add_post("/sessions/{protocol}/half_open", self.half_open)
        r.add_post("/sessions/{protocol}/faults", self.faults)
        r.add_post("/sessions/{protocol}/flood", self.flood)
        r.add_get("/calls", self.calls)
        r.add_post("/calls", self.inject_calls)
        r.add_get("/calls/{call_id}", self.call)
        r.add_post("/calls/{call_id}/hangup", self.hangup)
        r.add_post("/calls/{call_id}/inputs", self.add_inputs)
        r.add_post("/messages", self.inject_messages)
        r.add_post("/handshakes/refuse", self.refuse_handshakes)
        r.add_get("/journal", self.journal)
        r.add_delete("/journal", self.clear_journal)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        """Listen on the bind host's ``port`` (0 = any free port; read :attr:`port`)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind_host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ---------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def info(self, request: web.Request) -> web.Response:
        return _json(self._info())

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.core.stats())

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(self.core.config.to_dict())

    async def post_config(self, request: web.Request) -> web.Response:
        return _json(self.core.set_config(await _body(request)))

    async def add_credentials(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.core.credentials.add(str(body["project"]), str(body["token"]))
        return _json({"ok": True})

    async def make_jwt(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return _json(
            {"jwt": self.core.credentials.make_jwt(body.get("project"), float(body.get("ttl", 3600)))}
        )

    async def sessions(self, request: web.Request) -> web.Response:
        return _json({"sessions": self.core.list_sessions()})

    async def session(self, request: web.Request) -> web.Response:
        return _json(self.core.session(request.match_info["protocol"]).describe())

    async def push_event(self, request: web.Request) -> web.Response:
        body = await _body(request)
        params = body.get("params", {})
        event_id = self.core.push_event(request.match_info["protocol"], str(body["event_type"]), params)
        return _json({"id": event_id})

    async def push_raw(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.core.push_raw(request.match_info["protocol"], body["frame"])
        return _json({"ok": True})

    async def drop(self, request: web.Request) -> web.Response:
        return _json({"dropped": self.core.drop(request.match_info["protocol"])})

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await _body(request)
        acked = await self.core.disconnect(request.match_info["protocol"], bool(body.get("restart", False)))
        return _json({"acked": acked})

    async def half_open(self, request: web.Request) -> web.Response:
        body = await _body(request)
        protocol = request.match_info["protocol"]
        self.core.set_half_open(protocol, answer_pings=body.get("answer_pings"), silent=body.get("silent"))
        return _json(self.core.session(protocol).describe())

    async def faults(self, request: web.Request) -> web.Response:
        return _json(self.core.set_faults(request.match_info["protocol"], await _body(request)))

    async def flood(self, request: web.Request) -> web.Response:
        body = await _body(request)
        protocol = request.match_info["protocol"]
        self.core.session(protocol)
        self.core.spawn(
            self.core.flood(
                protocol, int(body.get("count", 10000)), str(body.get("event_type", "calling.call.play"))
            )
        )
        return _json({"started": True})

    async def calls(self, request: web.Request) -> web.Response:
        return _json({"calls": self.core.list_calls(request.query.get("state"))})

    async def call(self, request: web.Request) -> web.Response:
        call = self.core.calls.calls.get(request.match_info["call_id"])
        if call is None:
            return _json({"error": "unknown call"}, 404)
        return _json(call.describe())

    async def inject_calls(self, request: web.Request) -> web.Response:
        body = await _body(request)
        options = _given(body, _CALL_OPTIONS)
        ids = self.core.inject_calls(
            str(body.get("context", "default")), int(body.get("count", 1)), body.get("rate"), **options
        )
        return _json({"call_ids": ids})

    async def hangup(self, request: web.Request) -> web.Response:
        body = await _body(request)
        ok = self.core.hangup(request.match_info["call_id"], str(body.get("reason", "hangup")))
        return _json({"hung_up": ok}, 200 if ok else 404)

    async def add_inputs(self, request: web.Request) -> web.Response:
        body = await _body(request)
        pending = self.core.calls.add_inputs(request.match_info["call_id"], body.get("inputs"))
        if pending is None:
            return _json({"error": "unknown or ended call"}, 404)
        return _json({"inputs": pending})

    async def inject_messages(self, request: web.Request) -> web.Response:
        body = await _body(request)
        options = _given(body, _MESSAGE_OPTIONS)
        context = str(body.get("context", "default"))
        ids = [self.core.messaging.inject(context, **options) for _ in range(int(body.get("count", 1)))]
        return _json({"message_ids": [i for i in ids if i is not None], "undeliverable": ids.count(None)})

    async def refuse_handshakes(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.core.refuse_handshakes = int(body.get("count", 1))
        return _json({"refuse_handshakes": self.core.refuse_handshakes})

    async def journal(self, request: web.Request) -> web.Response:
        return _json({"sessions": self.core.journal.frames(request.query.get("session"))})

    async def clear_journal(self, request: web.Request) -> web.Response:
        self.core.journal.clear()
        return _json({"ok": True})
