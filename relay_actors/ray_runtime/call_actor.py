"""CallActor: where user logic runs on Ray — many calls per process, as asyncio tasks.

A Ray actor process costs ~90 MiB, so one process per call is out of the
question: each CallActor hosts thousands of calls. It listens for links from
the app's connection actors (:mod:`relay_actors.ray_runtime.actor_link`: a private Unix
socket for those on its node, TLS with the app's certificate for the others,
both behind the link's mutual handshake); they send it batches of items
(:mod:`relay_actors.ray_runtime.actor_messages`): offers, events, results, acknowledged
once applied; it sends back batches of requests. Its calls, dials, messages
and handler runs are a :class:`~relay_actors.call_host.CallHost`'s, the one the
in-process client uses, fed the items as they come by the actor's
:class:`~relay_actors.ray_runtime.call_actor_core.CallActorCore` (its decisions, without
Ray); each call is a regular :class:`~relay_actors.call.Call` whose commands travel
through the :class:`~relay_actors.ray_runtime.call_actor_core.ShardLane` of its shard,
so the user's ``on_call`` handler is the same code that runs in-process.

Inside a CallActor, the app's own ``RelayClient`` (the one the handlers refer to:
unpickled with them, or built while their module is imported here) is an
:class:`ActorSideClient`: ``dial``, ``send_message``, ``execute``, ``receive`` and
``unreceive`` go through the app's connection actors. A ``RelayClient(...)`` a
handler constructs itself is a real, independent in-process client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ray import cloudpickle

from .. import logcontext
from ..call import Call
from ..config import context_list, updated_contexts
from ..errors import RelayError
from ..message import Message
from ..protocol import constants as c
from ..tasks import BackgroundTasks
from . import actor_messages as m
from . import link_tls
from .actor_info import link_stats
from .actor_info import where as _where
from .actor_link import LinkHub, LinkServer
from .call_actor_core import CallActorCore, Fetched
from .cpu_priority import claim_normal_priority
from .gc_tuning import tune_gc
from .link_protocol import LinkSession
from .options import CallActorOptions
from .shard_handles import shard_handle

__all__ = ["CallActor", "current_host"]

log = logging.getLogger("relay_actors.ray_runtime.call_actor")

_HOST: CallActor | None = None
#: How often the shards' sessions are read for the handlers' client (protocol, contexts).
_SESSION_REFRESH = 5.0


def _configure_logging(options: CallActorOptions) -> None:
    """The handlers log at the app's level, each record with its app, node and call id
    (Ray forwards this process's stderr to the driver: ``ray job logs``)."""
    import ray

    from .job_logs import show_in_job

    show_in_job(options.log_job)
    logcontext.configure_call_actor(options.log_level, ray.util.get_node_ip_address())


def current_host() -> CallActor | None:
    """The CallActor of this process, if this process is one."""
    return _HOST


def building_app_client() -> CallActor | None:
    """The CallActor of this process while it unpickles handlers (importing the app's
    module, whose ``RelayClient(...)`` is then the app's client: the proxy)."""
    return _HOST if _HOST is not None and _HOST._unpickling else None


class CallActor:
    """Hosts calls and runs the app's handlers (create with
    :func:`~relay_actors.ray_runtime.spawn.spawn_call_actor`). A shell over
    :class:`~relay_actors.ray_runtime.call_actor_core.CallActorCore`: the link server, the
    Ray methods, the session reads; the core decides what each item does.

    Args:
        app: the app's name (actor names and GCS keys derive from it).
        index: this actor's number in the pool.
        handlers: cloudpickled ``{"on_call": ..., "on_message": ...}``.
        options: see :class:`~relay_actors.ray_runtime.options.CallActorOptions`.
    """

    def __init__(self, app: str, index: int, handlers: bytes, options: CallActorOptions) -> None:
        global _HOST
        _HOST = self
        _configure_logging(options)
        self.app = app
        self.index = index
        self.incarnation = ""  # the link server's, once it is up
        self.options = options
        self.capacity = options.capacity
        self.shards = options.shards
        self.project = options.project
        self.host = options.host
        #: Every shard's session as last read (see :meth:`_watch_sessions`).
        self.sessions: list[dict[str, Any] | None] = []
        self._unpickling = False
        #: The decisions: what each link item does, requests, the driver's streams.
        self.core = CallActorCore(app, options, self.send_item)
        #: The calls, dials, messages and handler runs of this actor.
        self.call_host = self.core.host
        self.tasks = self.call_host.tasks
        self.counters = self.core.counters
        #: The lane of each connection shard.
        self.links = self.core.lanes
        self._link_server: LinkServer | None = None
        self._hub: LinkHub | None = None
        self._endpoint: dict[str, Any] = {}
        #: This actor's own long-lived work, apart from the handlers' (``tasks``, which
        #: ``handler_tasks`` counts and a quiescent actor has none of).
        self.service = BackgroundTasks()
        self.service.spawn(self._serve_links(), "link server")
        tune_gc()  # set up: freeze what start-up made (see gc_tuning)
        claim_normal_priority(f"CallActor {index}")  # it carries calls (see cpu_priority)
        #: (until, hang, cleared) while :meth:`owned` is made to fail (:meth:`fail_owned`).
        self._owned_fault: tuple[float, bool, asyncio.Event] | None = None
        # Unpickle last: a RelayClient inside the handlers' globals becomes a proxy to us.
        # The app's own code, cloudpickled by its driver, reaching us only through Ray,
        # behind its token auth: our constructor argument from the router, which has it
        # from its own (the driver's) or from an upgrade's Ray call — after a restart
        # mid-upgrade, from the app's GCS KV namespace, where Ray keeps its own pickled
        # functions too. Never bytes from a socket of ours: the links and the RELAY
        # socket carry only JSON (tests/link: a pickle on a link never runs), and
        # tests/test_layout.py allows unpickling in these two places alone.
        with self.unpickling():
            loaded = cloudpickle.loads(handlers)
        self.call_host.on_call = loaded.get("on_call")
        self.call_host.on_message = loaded.get("on_message")

    @property
    def calls(self) -> dict[str, Call]:
        """The calls this actor hosts, by call_id."""
        return self.call_host.calls

    # --- the direct links from the connection actors (see actor_link) --------------------

    async def _serve_links(self) -> None:
        import ray

        from . import kvstore, tracing_setup

        secrets = await kvstore.AppSecrets.open(self.app)
        await tracing_setup.configure(secrets, "call_actor", f"call_actor:{self.index}")  # tracing hook
        secret = await secrets.link_secret()
        identity = await secrets.link_tls()
        if not secret or not identity:
            log.error("CallActor %d: no link secret stored for app %r", self.index, self.app)
            return
        server = LinkServer(
            bytes.fromhex(secret),
            self.index,
            self.core.apply,
            on_restarted=self._on_shard_restarted,
            tls=link_tls.server_context(identity),
            linger=self.options.link_linger,
        )
        session_dir = None
        with contextlib.suppress(Exception):  # Ray's session dir: private API, hence the guard
            session_dir = ray._private.worker._global_node.get_session_dir_path()  # type: ignore[attr-defined]
        endpoint = await server.start(ray.util.get_node_ip_address(), session_dir)
        self._link_server = server
        self.incarnation = server.incarnation.hex()
        self._endpoint = {**endpoint, "node_id": ray.get_runtime_context().get_node_id()}
        self._hub = LinkHub(server)
        self._hub.start()
        self.core.ready.set()
        self.service.spawn(self._watch_sessions(), "session reads")

    @contextlib.contextmanager
    def unpickling(self) -> Iterator[None]:
        """While handlers are unpickled, a ``RelayClient(...)`` is the app's client (the proxy)."""
        self._unpickling = True
        try:
            yield
        finally:
            self._unpickling = False

    async def _watch_sessions(self) -> None:
        """Read the shards' sessions for the handlers' client (``relay_protocol``,
        ``contexts``, ``connected``): quickly until the first protocol, then every few
        seconds (actors have no push to us outside the link, which carries calls)."""

        delay = 0.2
        while True:
            handles: list[Any] = []
            for shard in range(self.shards):
                try:
                    handles.append(shard_handle(self.app, shard))
                except ValueError:  # not created yet, or gone
                    handles.append(None)
            answers = await asyncio.gather(
                *(asyncio.wait_for(h.session_info.remote(), 5.0) for h in handles if h is not None),
                return_exceptions=True,
            )
            if len(answers) == self.shards:
                self.sessions = [None if isinstance(a, BaseException) else a for a in answers]
            known = bool(self.sessions and self.sessions[0] and self.sessions[0].get("protocol"))
            delay = _SESSION_REFRESH if known else min(delay * 2, _SESSION_REFRESH)
            await asyncio.sleep(delay)

    async def endpoint(self) -> dict[str, Any]:
        """Where the connection actors link to this actor (Unix socket path, TLS address, node)."""
        await asyncio.wait_for(self.core.ready.wait(), 30.0)
        return self._endpoint

    def _on_shard_restarted(self, previous: LinkSession) -> None:
        """A connection actor came back as a new process (see :meth:`CallActorCore.shard_restarted`)."""
        self.core.shard_restarted(previous.peer_id, [wire for wire, _ in previous.take_pending()])

    def send_item(self, shard: int, item: m.ToShard) -> None:
        """Send one item to connection shard ``shard`` (encoded, batched by the link)."""
        server = self._link_server
        if server is None:
            raise RelayError("connection_lost", "the link server is not up yet")
        server.send(shard, m.encode(item))

    async def request(self, shard: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request through connection shard ``shard`` (batched) and await its result."""
        return await self.core.request(shard, method, params)

    def next_shard(self) -> int:
        """The shard the next new dial, message or request goes through (in turn)."""
        return self.core.next_shard()

    # --- for the driver's client ------------------------------------------------------

    async def dial_remote(
        self, devices: Any, handler: bytes | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        """A dial asked for by the driver: the call (and ``handler``) live here."""
        with self.unpickling():  # (the driver's code, through a Ray call: see __init__)
            fn = cloudpickle.loads(handler) if handler else None
        call = await self.call_host.dial(devices, handler=fn, **options)
        self.core.follow_call(call)  # from here on its events are kept for the driver's Call
        core = call._core
        return {
            "call_id": call.call_id,
            "node_id": call.node_id,
            "tag": call.tag,
            "actor": self.index,
            "direction": core.direction,
            "context": core.context,
            "project_id": core.project_id,
            "segment_id": core.segment_id,
            "device": core.device,
            "call_state": core.state,
        }

    async def call_events(self, call_id: str, start: int, timeout: float) -> Fetched | None:
        """The events of driver-dialled ``call_id`` from number ``start`` on, and the next
        number (see :class:`~relay_actors.ray_runtime.call_actor_core.EventStream`); ``None``
        if this actor does not know the call."""
        return await self.core.call_events(call_id, start, timeout)

    async def call_execute(self, call_id: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A command of the driver's Call, through the shard that owns the call."""
        lane = self.call_host.lane_of(call_id) or self.links[self.next_shard()]
        return await self.call_host.command_for(call_id, lane, method, params)  # tracing hook

    async def send_message_remote(self, params: dict[str, Any]) -> dict[str, Any]:
        """A message sent by the driver: returns the send's result at once; the driver
        then fetches its state events with :meth:`message_events`."""
        followed, record = self.core.message_listener()
        message = await self.call_host.send_message(**params, listener=record)
        if message.message_id:
            self.core.follow_message(message.message_id, followed)
        return {
            "message_id": message.message_id,
            "context": message.context,
            "state": message.state,
            "reason": message.reason,
        }

    async def message_events(self, message_id: str, start: int, timeout: float) -> Fetched | None:
        """The state events of driver-sent ``message_id`` from number ``start`` on, waiting
        up to ``timeout`` s for one, and the next number; ``None`` if this actor does not
        know the message."""
        return await self.core.message_events(message_id, start, timeout)

    # --- for the router and the connection actors ------------------------------------

    async def owned(self, shard: int) -> dict[str, Any]:
        """What this actor holds for ``shard``: the routing state a restarted connection actor rebuilds."""
        fault = self._owned_fault
        left = fault[0] - asyncio.get_running_loop().time() if fault is not None else 0.0
        if fault is not None and left > 0:
            if fault[1]:  # hang: no answer (the caller's timeout fires) until it ends or is cleared
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(fault[2].wait(), left)
            raise RelayError("internal", "owned() fails on purpose (fault injection)")
        # With this incarnation: a shard that restarted knows which life of this actor
        # its calls are on (a loss reported later for this incarnation is not theirs).
        return {**self.call_host.owned_by(self.links[shard]), "incarnation": self.incarnation}

    async def fail_owned(self, seconds: float, hang: bool = False) -> None:
        """Fault injection for tests and drills (a Ray call, never reachable from the
        network): :meth:`owned` fails (or, with ``hang``, answers nothing until then and
        fails) for the next ``seconds``, as a CallActor too busy to answer would."""
        if self._owned_fault is not None:
            self._owned_fault[2].set()  # a hanging owned() ends now
        self._owned_fault = (asyncio.get_running_loop().time() + seconds, hang, asyncio.Event())

    async def adopt(self, shard: int, calls: list[dict[str, Any]]) -> int:
        """Re-home calls whose CallActor died: they get ``recovered = True`` and the
        ``on_call`` handler runs again for them (it can check ``call.recovered``)."""
        return sum(self.call_host.adopt(self.links[shard], params) for params in calls)

    async def health(self) -> dict[str, Any]:
        """Liveness and load: the router polls this."""
        await asyncio.wait_for(self.core.ready.wait(), 30.0)
        return {
            "incarnation": self.incarnation,
            "calls": len(self.calls),
            "capacity": self.capacity,
            "node": self._endpoint.get("node_id", ""),
        }

    async def stats(self) -> dict[str, Any]:
        return self.local_stats()

    def local_stats(self) -> dict[str, Any]:
        """This actor's figures (what the handlers' ``client.stats()`` shows)."""
        return {
            "index": self.index,
            "incarnation": self.incarnation,
            **_where(),
            "calls": len(self.calls),
            "pending_requests": len(self.core.requests),
            "pending_dials": self.call_host.pending_dials,
            "handler_tasks": len(self.tasks),
            "loop_lag": self._hub.lag if self._hub is not None else 0.0,
            "links": link_stats(self._link_server),
            **self.counters,
        }

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop handlers, close the links."""
        await self.tasks.cancel_all()
        await self.service.cancel_all()
        if self._hub is not None:
            await self._hub.aclose()
        if self._link_server is not None:
            await self._link_server.aclose()


class ActorSideClient:
    """What the app's ``RelayClient`` is inside a CallActor: requests go through the
    app's connection actors. Handler registration is the driver's business, so the
    decorators here only return the function. ``relay_protocol``, ``contexts`` and
    ``connected`` show the first connection shard's session as last read (every few
    seconds, and at once after this client's own ``receive``/``unreceive``).
    Credentials never reach it: ``token`` and ``jwt_token`` raise."""

    def __init__(self, host: CallActor) -> None:
        self._host = host

    def __repr__(self) -> str:
        return (
            f"<RelayClient proxy in CallActor {self._host.index} of app {self._host.app!r} "
            f"host={self.host!r} contexts={self.contexts!r}>"
        )

    def on_call(self, handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
        return handler

    def on_message(self, handler: Callable[[Message], Any]) -> Callable[[Message], Any]:
        return handler

    # --- settings and state -------------------------------------------------------

    @property
    def project(self) -> str:
        return self._host.project

    @property
    def host(self) -> str:
        return self._host.host

    @property
    def token(self) -> str:
        raise AttributeError("the API token is not available inside a CallActor (it stays with the runtime)")

    @property
    def jwt_token(self) -> str:
        raise AttributeError("the JWT is not available inside a CallActor (it stays with the runtime)")

    def _session(self) -> dict[str, Any]:
        sessions = self._host.sessions
        return (sessions[0] if sessions else None) or {}

    @property
    def relay_protocol(self) -> str:
        """The first shard's protocol string (``""`` until first read)."""
        return str(self._session().get("protocol") or "")

    @property
    def contexts(self) -> list[str]:
        """The first shard's contexts (the constructor's plus ``receive``d ones)."""
        return list(self._session().get("contexts") or [])

    @property
    def connected(self) -> bool:
        """Every shard's session was connected when last read."""
        sessions = self._host.sessions
        return bool(sessions) and all(s is not None and s.get("connected") for s in sessions)

    @property
    def runtime(self) -> str:
        return "ray"

    def stats(self) -> dict[str, Any]:
        """This CallActor's figures (the app's: ``ray_stats()`` on the driver)."""
        return self._host.local_stats()

    # --- requests -----------------------------------------------------------------

    async def dial(self, devices: Any, **kw: Any) -> Call:
        return await self._host.call_host.dial(devices, **kw)

    async def send_message(self, **kw: Any) -> Message:
        return await self._host.call_host.send_message(**kw)

    async def execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._host.links[self._host.next_shard()].execute(method, params or {})

    async def receive(self, contexts: Sequence[str] | str) -> None:
        """Subscribe every shard to more contexts (a str is one context, as in the SDK)."""
        await self._subscribe(c.METHOD_RECEIVE, contexts)

    async def unreceive(self, contexts: Sequence[str] | str) -> None:
        """Unsubscribe every shard from contexts."""
        await self._subscribe(c.METHOD_UNRECEIVE, contexts)

    async def _subscribe(self, method: str, contexts: Sequence[str] | str) -> None:
        ctx = context_list(contexts)
        if not ctx:
            return
        for shard in range(self._host.shards):
            await self._host.request(shard, method, {"contexts": ctx})
        session = self._session()
        if session:  # show it now, not at the next read
            session["contexts"] = updated_contexts(session.get("contexts") or [], method, ctx)

    # --- lifecycle: the driver's ----------------------------------------------------

    def run(self) -> None:
        raise RuntimeError("run() belongs to the driver, not to a handler inside a CallActor")

    async def connect(self) -> None:
        """Already connected through the connection actors."""

    async def disconnect(self) -> None:
        """The driver owns the connection; nothing to do here."""

    async def __aenter__(self) -> ActorSideClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """The driver owns the connection; nothing to do here."""


def client_proxy(app: str) -> ActorSideClient:
    """Unpickling target of ``RelayClient``: the proxy of this CallActor."""
    host = current_host()
    if host is None:
        raise RuntimeError(
            f"a RelayClient of app {app!r} was unpickled outside a CallActor; "
            "pass handlers to on_call() instead of shipping the client"
        )
    return ActorSideClient(host)
