"""A shard core's requests from CallActors: the early-request queue, fencing, results.

A CallActor's request goes to RELAY unless it comes before the RELAY connection
exists (it waits, bounded) or is for a call the lost-actor policy took from that
CallActor (refused: fenced). Its outcome goes back over the link and updates what
the shard tracks: dials, messages and their early states, contexts, a passed
call's slot. Owned by :class:`~relay_actors.ray_runtime.shard_core.ShardCore`.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Protocol

from ..errors import RelayError
from ..protocol import constants as c
from ..protocol.messages import MessageTracker
from ..protocol.recent_ids import RecentIds
from ..protocol.routing import EventRouter
from . import actor_messages as m
from .shard_actions import ShardEffects

__all__ = ["MAX_EARLY_REQUESTS", "MAX_FENCED", "RequestsUser", "ShardRequests"]

#: Requests CallActors send while this shard starts (no RELAY connection yet) wait, up to this many.
MAX_EARLY_REQUESTS = 10_000
#: Calls the lost-actor policy took from a CallActor are fenced; the oldest are forgotten beyond this.
MAX_FENCED = 100_000


class RequestsUser(Protocol):
    """What :class:`ShardRequests` uses of its shard core."""

    fx: ShardEffects
    counters: Counter[str]
    routes: EventRouter[int]
    dial_owner: dict[str, int]
    msg_owner: dict[str, int]
    early_messages: MessageTracker

    def to_actor(self, idx: int, item: m.ToCallActor, ack_id: str | None) -> None: ...

    def free_slot(self, call_id: str, idx: int) -> None: ...

    def contexts_changed(self, method: str, params: dict[str, Any]) -> None: ...


class ShardRequests:
    """Requests from CallActors (see module docstring)."""

    def __init__(self, core: RequestsUser) -> None:
        self.core = core
        #: Calls the lost-actor policy took from a CallActor: commands for them from
        #: anyone but their current owner are refused (bounded, oldest forgotten).
        self.fenced = RecentIds(MAX_FENCED)
        #: The RELAY connection exists (requests can be sent; they queue while it reconnects).
        self.relay_ready = False
        #: Start-up failed for good: requests fail instead of waiting.
        self.failed = False
        #: The session's protocol (the default context of ``messaging.send``).
        self.protocol = ""
        #: Requests that came before the RELAY connection existed (see :meth:`on_request`).
        self.early: deque[tuple[int, str, str, dict[str, Any]]] = deque()

    def relay_created(self, protocol: str) -> None:
        """The RELAY connection exists (it may still be connecting): send the requests
        that waited for it, in order (each checked again: the rebuild may have moved its call)."""
        self.relay_ready = True
        self.protocol = protocol
        self._drain_early_requests()

    def start_failed(self) -> None:
        """Start-up failed: the requests that waited fail (no connection will come)."""
        self.failed = True
        self._drain_early_requests()

    def on_request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        """A request from CallActor ``idx``; its result goes back over the link."""
        if not self.relay_ready:
            # Starting up: the links come up before the RELAY connection exists. These
            # requests never reached the server, so they wait for it (bounded) rather than
            # fail: a failure here looked like "cut off" to an idempotent verb, which
            # resent it at once, failed thrice in a few ms, and the handler's error policy
            # then ended a healthy call.
            if not self.failed and len(self.early) < MAX_EARLY_REQUESTS:
                self.early.append((idx, req_id, method, params))
                return
            code = "queue_full" if not self.failed else "connection_lost"
            self.request_done(idx, req_id, method, params, None, RelayError(code, "the shard is starting up"))
            return
        call_id = params.get("call_id") if method.startswith("calling.") else None
        if call_id is not None and (
            call_id in self.fenced or self.core.routes.calls.get(call_id, idx) != idx
        ):
            # Not this actor's call any more (the lost-actor policy moved or ended it).
            self.core.counters["requests_fenced"] += 1
            error = RelayError(410, "the runtime ended or moved this call; it is not this CallActor's")
            self.request_done(idx, req_id, method, params, None, error)
            return
        if method == "calling.dial" and isinstance(params.get("tag"), str):
            self.core.dial_owner[params["tag"]] = idx
            self.core.routes.dials.start(params["tag"])
        elif method == "messaging.send" and not params.get("context"):
            params = {**params, "context": self.protocol or "default"}
        self.core.fx.request(idx, req_id, method, params)

    def _drain_early_requests(self) -> None:
        while self.early:
            idx, req_id, method, params = self.early.popleft()
            if not self.relay_ready:
                error = RelayError("connection_lost", "the shard failed to start")
                self.request_done(idx, req_id, method, params, None, error)
            else:
                self.on_request(idx, req_id, method, params)

    def fence(self, call_id: str) -> None:
        self.fenced.remember(call_id)

    def request_done(
        self,
        idx: int,
        req_id: str,
        method: str,
        params: dict[str, Any],
        result: dict[str, Any] | None,
        error: RelayError | None,
    ) -> None:
        """The outcome of CallActor ``idx``'s request: back to it over the link, and what
        it changes here (dials, messages, contexts, a passed call's slot)."""
        if error is not None:
            if method == "calling.dial" and error.failure != "connection_closed":
                self.core.dial_owner.pop(params.get("tag", ""), None)
                self.core.routes.dials.cancel(params.get("tag", ""))
            failed = m.FailureItem(req_id, error.failure or error.code, str(error.message), error.data)
            self.core.to_actor(idx, failed, None)
            return
        assert result is not None
        if method == "messaging.send":
            self._message_sent(idx, req_id, params, result)
            return
        if method in (c.METHOD_RECEIVE, c.METHOD_UNRECEIVE):
            self.core.contexts_changed(method, params)
        elif method == "calling.pass":
            # A passed call goes to another consumer and sends us nothing more:
            # free its slot now, or it would leak until the end of time.
            call_id = params.get("call_id", "")
            self.core.counters["calls_passed"] += 1
            owner = self.core.routes.remove_call(call_id)
            if owner is not None:  # (None: its ``ended`` beat the pass result and freed it)
                self.core.free_slot(call_id, owner)
        self.core.to_actor(idx, m.ResultItem(req_id, result), None)

    def _message_sent(self, idx: int, req_id: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        message_id = result.get("message_id")
        self.core.to_actor(idx, m.ResultItem(req_id, {**result, "context": params.get("context", "")}), None)
        if isinstance(message_id, str) and message_id:
            self.core.msg_owner[message_id] = idx
            for event in self.core.early_messages.early.pop(message_id, []):
                state = m.MsgStateItem(event.event_type, event.params, event.timestamp)
                self.core.to_actor(idx, state, None)
