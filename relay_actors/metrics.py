"""Prometheus metrics of every component, read from their ``stats()``.

Components keep plain counters in their ``stats()``; the exporters here read
them periodically or at scrape time, so nothing is added to the per-frame path.

One fixed list of metrics (:data:`METRICS`), one mapping from ``stats()`` keys
to them (:func:`flatten`) and one builder of Prometheus families serve both
runtimes:

* **On Ray** — one endpoint per app, ``http://<router node>:<port>/metrics``,
  served by the app's router actor (it lives as long as the app):
  ``relay_actors.ray_runtime.metrics_export`` pulls every live component's
  ``stats()`` (router, connection actors, CallActors of this app only) every
  ``RELAY_METRICS_INTERVAL`` seconds (default 2), with a timeout, and keeps the
  latest in an :class:`AppSeries`, which the scrape reads. The port is
  :data:`DEFAULT_METRICS_PORT` unless ``RayOptions(metrics_port=...)``,
  ``RELAY_METRICS_PORT`` or ``relay-actors run --metrics-port`` say otherwise.
* **In-process** (``RelayClient(runtime="local")``) — :class:`ClientCollector`, a
  ``prometheus_client`` collector over ``RelayClient.stats()``, and
  :func:`serve_client_metrics` to serve it on a port.

Scraped names are the metric names (``relay_offers``), counters with
``_total`` (``relay_offers_total``). Every metric carries the labels ``app``,
``component`` (``connection``, ``router``, ``call_actor`` or ``client``),
``shard`` (connection actor number), ``actor`` (CallActor number) and ``node``
(the Ray node's address); a label that does not apply is empty. Some metrics
add one more: ``outcome``, ``event_type``, ``code``, ``peer``, ``key``,
``direction`` or ``event`` (:data:`LABELS` is the whole set). Label values that
come from the wire (event types, violation codes) and unknown keys are capped
per component (:data:`MAX_DYNAMIC_VALUES`); the rest go to ``"other"``.

Counters on Ray stay monotonic while the router lives: when a component
restarts (a new process) or one of its counters goes down (a link rebuilt), the
endpoint adds what the series had counted before to what it counts now, so a
series never decreases; a router restart starts every series again from the
components' own counts (a counter reset, which ``rate()`` handles). A component
that leaves the app (a CallActor removed) disappears at the next poll; one that
stops answering disappears after :data:`STALE_AFTER_POLLS` polls. The table of
every metric: ``dashboards/METRICS.md``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ArgumentError

__all__ = [
    "BASE_TAGS",
    "DEFAULT_METRICS_PORT",
    "LABELS",
    "METRICS",
    "AppSeries",
    "ClientCollector",
    "MetricDef",
    "Report",
    "Sample",
    "flatten",
    "resolve_metrics_config",
    "serve_client_metrics",
    "serve_local_metrics",
]

log = logging.getLogger("relay_actors.metrics")

BASE_TAGS = ("app", "component", "shard", "actor", "node")
#: Seconds between two reads of every component's stats on Ray.
DEFAULT_INTERVAL = 2.0
#: The port of an app's metrics endpoint unless configured (one per app: give a second
#: app on the same node a port of its own).
DEFAULT_METRICS_PORT = 9478
#: Polls a component may miss (not answering in time) before its series are dropped.
STALE_AFTER_POLLS = 3
#: Distinct values of a wire-derived tag (event type, violation code, unknown key) per exporter.
MAX_DYNAMIC_VALUES = 64
OTHER = "other"


@dataclass(frozen=True)
class MetricDef:
    """One exported metric: ``kind`` is ``"counter"`` or ``"gauge"``; ``extra`` the
    tag keys it has beyond :data:`BASE_TAGS`. Counter names carry no ``_total``."""

    name: str
    kind: str
    help: str
    extra: tuple[str, ...] = ()

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return BASE_TAGS + self.extra


def _c(name: str, help: str, *extra: str) -> MetricDef:
    return MetricDef(name, "counter", help, extra)


def _g(name: str, help: str, *extra: str) -> MetricDef:
    return MetricDef(name, "gauge", help, extra)


_DEFS = [
    # --- admission (connection actor / in-process client; router for the budget) ---
    _c(
        "relay_offers",
        "Inbound call offers by outcome: received, admitted, dropped, passed, "
        "no_capacity (no CallActor took it), invalid, replaced, ended_waiting (the caller "
        "hung up while the offer waited for a slot).",
        "outcome",
    ),
    _g(
        "relay_active_calls",
        "Calls in progress: the router's cluster-wide count, a connection "
        "actor's routed calls, a CallActor's hosted calls, or the in-process client's calls.",
    ),
    _g("relay_call_budget", "The admission limit (max_active_calls) the active calls count against."),
    _g(
        "relay_slots_granted",
        "Admission slots leased to a connection actor (router view per shard, connection actor's own view).",
    ),
    _g("relay_waiting_offers", "Offers waiting for an admission slot or a CallActor."),
    _c(
        "relay_shard_start_steps",
        "Connection actor start-up steps tried again (retry) or given up (it exits; Ray restarts it).",
        "outcome",
    ),
    _c(
        "relay_commands_in_doubt",
        "Answers and ends left in doubt by a connection actor's restart or a cut WebSocket: "
        "cut_off (parked until the session resumes), then shown_done or resent.",
        "outcome",
    ),
    _c("relay_lease_timeouts", "Waits for the router a connection actor gave up (offers dropped or passed)."),
    _g(
        "relay_unconfirmed_hangups",
        "Calls of lost CallActors whose hang-up is not confirmed yet (retried; their slots stay taken).",
    ),
    _c("relay_lost_call_hangup_failures", "Failed hang-ups of calls whose CallActor was lost (retried)."),
    _g("relay_placed_calls", "Calls a connection actor has placed on each CallActor (tag actor)."),
    # --- connection (WebSocket session) ---
    _g("relay_connected", "1 while the WebSocket session is up."),
    _g("relay_session_started_seconds", "Unix time the RELAY session started (its age: time() - this)."),
    _c("relay_reconnects", "Reconnections of the WebSocket session."),
    _c("relay_resumes", "Sessions resumed after a reconnection (protocol kept)."),
    _c("relay_connect_attempts", "WebSocket connection attempts, failed ones included."),
    _c("relay_loop_stalls", "Stalls of the event loop seen by the connection's timers (blocking code)."),
    _c("relay_loop_stalled_seconds", "Seconds the event loop was seen blocked, in all."),
    _g("relay_pending_requests", "JSON-RPC requests waiting for their result."),
    _g("relay_queued_frames", "Frames queued while disconnected."),
    _c("relay_queue_full", "Requests refused because the disconnected queue was full."),
    _c("relay_acks_sent", "Acks sent for server events."),
    _c("relay_events", "Server events received, by event type.", "event_type"),
    _c("relay_duplicate_events", "Redelivered events recognised and delivered only once."),
    _c("relay_events_unroutable", "Events that matched no call, dial or message."),
    _c(
        "relay_events_other_legs",
        "State events of outbound legs this client does not control (a transfer's far leg): not errors.",
    ),
    _c("relay_protocol_violations", "Frames dropped as RELAY protocol violations, by code.", "code"),
    _c("relay_server_pings", "Pings received from the server."),
    _c("relay_server_disconnects", "Disconnect orders received from the server."),
    _g("relay_pending_dials", "Dials waiting for their answer."),
    _c("relay_dial_orphans_ended", "Late legs of dials nobody took any more, hung up by the runtime."),
    _g("relay_tracked_messages", "Messages whose state is still tracked."),
    _c("relay_messages_dropped", "Message events a connection actor could not hand to a CallActor."),
    # A restarted connection actor and the CallActors it could not ask what they hold.
    _g("relay_call_actors_unknown", "CallActors a restarted connection actor could not ask yet."),
    _c(
        "relay_owned_queries",
        "Questions to an unknown CallActor about the calls it holds: outcome retry or given_up.",
        "outcome",
    ),
    _g("relay_held_slots", "Slots kept for calls on CallActors a restarted connection actor could not ask."),
    _g("relay_held_events", "Events held until the CallActor of their call says it holds it."),
    _c(
        "relay_held_event_outcomes",
        "Events held for an unknown CallActor: outcome held, released (routed) or overflow (acked).",
        "outcome",
    ),
    _c("relay_calls_passed", "Calls a handler passed on (pass_()) after they were placed."),
    _c(
        "relay_driver_streams_forgotten",
        "Event streams of driver-dialled calls / driver-sent messages a CallActor stopped keeping "
        "(the oldest, past its bound): outcome call or message.",
        "outcome",
    ),
    _c("relay_upgrades", "Rolling upgrades of the app's handler code: outcome done or failed.", "outcome"),
    _c(
        "relay_lost_actor_calls",
        "Calls whose CallActor died, by what became of them: lost, hung_up, rehomed.",
        "outcome",
    ),
    # --- router and CallActor pool ---
    _g("relay_call_actors", "CallActors in the app's pool."),
    _g("relay_call_actor_load", "Calls the router has placed on each CallActor (tag actor)."),
    _c("relay_call_actors_created", "CallActors the router created."),
    _c("relay_call_actors_retired", "CallActors of an older code generation retired (rolling upgrade)."),
    _c(
        "relay_drain_deadline_ends",
        "Calls hung up, and messages no longer followed, because their retiring CallActor's drain "
        "deadline passed (rolling upgrade): outcome hung_up (calls) or untracked (messages).",
        "outcome",
    ),
    _c("relay_call_actor_restarts", "CallActor restarts the router noticed (a new incarnation)."),
    _c("relay_shard_restarts", "Connection actors the router restarted because their start-up failed."),
    _c(
        "relay_standby_takeovers",
        "Shards taken over by their warm standby when the process serving them died "
        "(RayOptions.standby_connections).",
    ),
    _c("relay_slots_leased", "Admission slots leased to connection actors."),
    _c("relay_slots_returned", "Admission slots given back by connection actors."),
    _c("relay_lease_shortfall", "Slots asked for but not leased (the budget was used up)."),
    _g(
        "relay_lease_unknown_shards",
        "Shards yet to report their leases to the router since it started (none leased until 0).",
    ),
    _c("relay_double_assignments", "Calls found on two CallActors while rebuilding the call table."),
    # --- CallActors (and the in-process client's handlers) ---
    _c("relay_handlers", "on_call handlers finished, by outcome: completed, error, timeout.", "outcome"),
    _c("relay_handler_hangups", "Calls hung up: handler raised (error) or ran over (timeout).", "outcome"),
    _g("relay_handler_tasks", "Handler tasks running in a CallActor."),
    _c("relay_call_actor_offers", "Offers a CallActor accepted or refused (full).", "outcome"),
    _c("relay_call_actor_events", "Call events delivered to calls in a CallActor."),
    _c("relay_calls_ended", "Calls that ended in a CallActor."),
    _c("relay_calls_recovered", "Calls re-homed to a CallActor's recovered hook."),
    _c(
        "relay_item_errors",
        "Link items an actor failed on (error), did not know (unknown) or could not decode (malformed).",
        "outcome",
    ),
    # --- batches between actors ---
    _c("relay_batch_sends", "Batched actor calls from this actor to a peer.", "peer"),
    _c("relay_batch_items", "Items carried by those batched calls (items/sends = batch size).", "peer"),
    _g("relay_batch_largest", "Largest batch sent to a peer so far.", "peer"),
    _g("relay_batch_queued", "Items waiting for the next batch to a peer.", "peer"),
    # --- the actor links (connection actor ↔ CallActor data path) ---
    _c("relay_link_frames", "Link frames sent (out) and received (in), per peer.", "peer", "direction"),
    _c("relay_link_bytes", "Link bytes sent (out) and received (in), per peer.", "peer", "direction"),
    _c("relay_link_resent", "Frames sent again after a link reconnected (unacknowledged before).", "peer"),
    _c("relay_link_duplicates", "Frames received twice (after a resend), dropped by sequence.", "peer"),
    _g("relay_link_window", "Frames sent to a peer and not yet acknowledged (window occupancy).", "peer"),
    _g("relay_link_pending", "Items waiting to be framed for a peer (window full or link down).", "peer"),
    _c("relay_link_ack_latency_seconds_sum", "Seconds from sending a frame to its acknowledgement.", "peer"),
    _c("relay_link_ack_latency_seconds_count", "Frames acknowledged (count of the latency sum).", "peer"),
    _g("relay_link_connected", "1 while the link to a peer is up.", "peer"),
    _g("relay_link_peer_lag_seconds", "Event-loop lag a peer reported in its last heartbeat.", "peer"),
    _c(
        "relay_link_events",
        "Link events: accepted, authenticated, refused (failed handshakes, bad frames), "
        "handshake_timeout, handshake_evicted, connect_failure, silent_closed, peer_restart, slow, "
        "spare_asked (a CallActor turned slow with one other left to take calls: the pool was asked "
        "for one more), room_wait_extended (an offer waiting for a CallActor waited another 3 s: "
        "the pool was still adding one), overflow.",
        "event",
    ),
    _g("relay_loop_lag_seconds", "How late this actor's event loop ran its link timer (a blocked loop)."),
    _g("relay_call_actors_unavailable", "CallActors a connection actor places no new calls on (slow, down)."),
    _c("relay_requests_fenced", "Commands refused because the runtime had ended or moved their call."),
    _c("relay_pool_snapshots_ignored", "Pool snapshots a connection actor ignored (older than its own)."),
    _c(
        "relay_lost_actor_notices_ignored",
        "Notices of a CallActor's loss a connection actor ignored: older than the shard, which only "
        "knew the incarnation that replaced it (its calls there are alive).",
    ),
    # --- the rest ---
    _g("relay_stat", "A numeric stats() value with no metric of its own (tag key).", "key"),
]

#: Every exported metric by name. Names and tags are part of the dashboards' contract.
METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}
#: Every label a relay series may carry (Prometheus adds ``job`` and ``instance``).
LABELS: frozenset[str] = frozenset(BASE_TAGS).union(*(d.extra for d in _DEFS))


@dataclass(frozen=True)
class Sample:
    """One value read from ``stats()``: a metric name, its tags (base tags it
    overrides and its extra tags), and the value."""

    name: str
    tags: tuple[tuple[str, str], ...]
    value: float


# stats() key → (metric, fixed extra tags). A component-specific entry wins.
_Map = dict[str, tuple[str, dict[str, str]]]
_COMMON: _Map = {
    "offers": ("relay_offers", {"outcome": "received"}),
    "offers_admitted": ("relay_offers", {"outcome": "admitted"}),
    "offers_dropped": ("relay_offers", {"outcome": "dropped"}),
    "offers_passed": ("relay_offers", {"outcome": "passed"}),
    "offers_no_capacity": ("relay_offers", {"outcome": "no_capacity"}),
    "offers_invalid": ("relay_offers", {"outcome": "invalid"}),
    "offers_replaced": ("relay_offers", {"outcome": "replaced"}),
    "offers_ended_waiting": ("relay_offers", {"outcome": "ended_waiting"}),
    "offers_waited_for_room": ("relay_offers", {"outcome": "waited_for_room"}),
    "offers_placed_on_lagging": ("relay_offers", {"outcome": "placed_on_lagging"}),
    "streamed_calls_forgotten": ("relay_driver_streams_forgotten", {"outcome": "call"}),
    "followed_messages_forgotten": ("relay_driver_streams_forgotten", {"outcome": "message"}),
    "loop_lag": ("relay_loop_lag_seconds", {}),
    "unavailable_call_actors": ("relay_call_actors_unavailable", {}),
    "requests_fenced": ("relay_requests_fenced", {}),
    "call_actors_slow": ("relay_link_events", {"event": "slow"}),
    "capacity_asked_ahead": ("relay_link_events", {"event": "spare_asked"}),
    "room_waits_extended": ("relay_link_events", {"event": "room_wait_extended"}),
    "link_overflows": ("relay_link_events", {"event": "overflow"}),
    "unknown_link_items": ("relay_item_errors", {"outcome": "unknown"}),
    "malformed_link_items": ("relay_item_errors", {"outcome": "malformed"}),
    "item_errors": ("relay_item_errors", {"outcome": "error"}),
    "active_calls": ("relay_active_calls", {}),
    "granted": ("relay_slots_granted", {}),
    "budget": ("relay_call_budget", {}),
    "waiting_offers": ("relay_waiting_offers", {}),
    "lease_timeouts": ("relay_lease_timeouts", {}),
    "unconfirmed_hangups": ("relay_unconfirmed_hangups", {}),
    "lost_call_hangup_failures": ("relay_lost_call_hangup_failures", {}),
    "pending_dials": ("relay_pending_dials", {}),
    "dial_orphans_ended": ("relay_dial_orphans_ended", {}),
    "tracked_messages": ("relay_tracked_messages", {}),
    "events_unroutable": ("relay_events_unroutable", {}),
    "events_other_legs": ("relay_events_other_legs", {}),
    "messages_dropped": ("relay_messages_dropped", {}),
    "messages_untracked_drain_timeout": ("relay_drain_deadline_ends", {"outcome": "untracked"}),
    "unknown_call_actors": ("relay_call_actors_unknown", {}),
    "owned_retries": ("relay_owned_queries", {"outcome": "retry"}),
    "start_retries": ("relay_shard_start_steps", {"outcome": "retry"}),
    "commands_shown_done": ("relay_commands_in_doubt", {"outcome": "shown_done"}),
    "commands_resent": ("relay_commands_in_doubt", {"outcome": "resent"}),
    "commands_cut_off": ("relay_commands_in_doubt", {"outcome": "cut_off"}),
    "pool_snapshots_ignored": ("relay_pool_snapshots_ignored", {}),
    "losses_older_than_the_shard": ("relay_lost_actor_notices_ignored", {}),
    "start_give_ups": ("relay_shard_start_steps", {"outcome": "gave_up"}),
    "owned_given_up": ("relay_owned_queries", {"outcome": "given_up"}),
    "held_slots": ("relay_held_slots", {}),
    "held_events": ("relay_held_events", {}),
    "events_held": ("relay_held_event_outcomes", {"outcome": "held"}),
    "held_events_released": ("relay_held_event_outcomes", {"outcome": "released"}),
    "events_held_overflow": ("relay_held_event_outcomes", {"outcome": "overflow"}),
    "calls_passed": ("relay_calls_passed", {}),
    "upgrades": ("relay_upgrades", {"outcome": "done"}),
    "upgrades_failed": ("relay_upgrades", {"outcome": "failed"}),
    "calls_lost_actor": ("relay_lost_actor_calls", {"outcome": "lost"}),
    "calls_hung_up_lost_actor": ("relay_lost_actor_calls", {"outcome": "hung_up"}),
    "calls_rehomed": ("relay_lost_actor_calls", {"outcome": "rehomed"}),
    "handlers_completed": ("relay_handlers", {"outcome": "completed"}),
    "handler_errors": ("relay_handlers", {"outcome": "error"}),
    "handler_timeouts": ("relay_handlers", {"outcome": "timeout"}),
    "calls_hung_up_handler_error": ("relay_handler_hangups", {"outcome": "error"}),
    "calls_hung_up_handler_timeout": ("relay_handler_hangups", {"outcome": "timeout"}),
    "duplicate_events": ("relay_duplicate_events", {}),
    # Connection (Connection.stats(), ``conn.`` inside a connection actor's stats)
    "connected": ("relay_connected", {}),
    "session_started": ("relay_session_started_seconds", {}),
    "reconnects": ("relay_reconnects", {}),
    "resumes": ("relay_resumes", {}),
    "attempts": ("relay_connect_attempts", {}),
    "loop_stalls": ("relay_loop_stalls", {}),
    "loop_stalled_s": ("relay_loop_stalled_seconds", {}),
    "pending": ("relay_pending_requests", {}),
    "queued": ("relay_queued_frames", {}),
    "queue_full": ("relay_queue_full", {}),
    "acks_sent": ("relay_acks_sent", {}),
    "server_pings": ("relay_server_pings", {}),
    "server_disconnects": ("relay_server_disconnects", {}),
}
_BY_COMPONENT: dict[str, _Map] = {
    "connection": {
        "calls_hung_up_drain_timeout": ("relay_drain_deadline_ends", {"outcome": "hung_up"}),
    },
    "router": {
        "calls": ("relay_active_calls", {}),
        "actors": ("relay_call_actors", {}),
        "actors_created": ("relay_call_actors_created", {}),
        "call_actors_retired": ("relay_call_actors_retired", {}),
        "call_actor_restarts": ("relay_call_actor_restarts", {}),
        "shards_restarted": ("relay_shard_restarts", {}),
        "slots_leased": ("relay_slots_leased", {}),
        "slots_returned": ("relay_slots_returned", {}),
        "lease_shortfall": ("relay_lease_shortfall", {}),
        "unknown_shards": ("relay_lease_unknown_shards", {}),
        "double_assignments": ("relay_double_assignments", {}),
    },
    "call_actor": {
        "calls": ("relay_active_calls", {}),
        "pending_requests": ("relay_pending_requests", {}),
        "handler_tasks": ("relay_handler_tasks", {}),
        "offers": ("relay_call_actor_offers", {"outcome": "accepted"}),
        "offers_refused": ("relay_call_actor_offers", {"outcome": "refused"}),
        "events": ("relay_call_actor_events", {}),
        "events_for_unknown_calls": ("relay_events_unroutable", {}),
        "calls_ended": ("relay_calls_ended", {}),
        "calls_recovered": ("relay_calls_recovered", {}),
        "item_errors": ("relay_item_errors", {"outcome": "error"}),
        "unknown_items": ("relay_item_errors", {"outcome": "unknown"}),
        "malformed_items": ("relay_item_errors", {"outcome": "malformed"}),
    },
}
#: Identity or text fields: not metrics. ``leased`` is the sum of ``grants``.
_IGNORED = frozenset(
    {"shard", "index", "incarnation", "protocol", "pid", "leased", "lease_epoch", "start_began"}
)
#: Figures a component repeats from others (exported where they happen, not twice).
_REPEATED: dict[str, frozenset[str]] = {"router": frozenset({"calls_hung_up_drain_timeout"})}
#: Per-peer link figures (``links`` in stats()): key → (metric, fixed tags).
_LINK: _Map = {
    "frames_out": ("relay_link_frames", {"direction": "out"}),
    "frames_in": ("relay_link_frames", {"direction": "in"}),
    "bytes_out": ("relay_link_bytes", {"direction": "out"}),
    "bytes_in": ("relay_link_bytes", {"direction": "in"}),
    "resent": ("relay_link_resent", {}),
    "duplicates": ("relay_link_duplicates", {}),
    "window": ("relay_link_window", {}),
    "pending": ("relay_link_pending", {}),
    "ack_latency_sum": ("relay_link_ack_latency_seconds_sum", {}),
    "ack_latency_count": ("relay_link_ack_latency_seconds_count", {}),
    "connected": ("relay_link_connected", {}),
}
#: Process-wide link counters (``links["_process"]``) → relay_link_events{event}.
_LINK_EVENTS = {
    "link_accepted": "accepted",
    "links_authenticated": "authenticated",
    "link_refused": "refused",
    "handshakes_timed_out": "handshake_timeout",
    "handshakes_evicted": "handshake_evicted",
    "link_connect_failures": "connect_failure",
    "links_silent_closed": "silent_closed",
    "peer_restarts": "peer_restart",
    "link_callback_errors": "callback_error",
}
_BATCH = {
    "sends": "relay_batch_sends",
    "items": "relay_batch_items",
    "largest": "relay_batch_largest",
    "queued": "relay_batch_queued",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class Capper:
    """Bounds the distinct values of wire-derived tags (event types, codes, keys)."""

    def __init__(self, limit: int = MAX_DYNAMIC_VALUES) -> None:
        self.limit = limit
        self.seen: dict[str, set[str]] = {}

    def __call__(self, kind: str, value: str) -> str:
        seen = self.seen.setdefault(kind, set())
        if value in seen:
            return value
        if len(seen) >= self.limit:
            return OTHER
        seen.add(value)
        return value


def flatten(
    component: str, stats: dict[str, Any], cap: Callable[[str, str], str] | None = None
) -> list[Sample]:
    """Map a component's ``stats()`` to samples of :data:`METRICS`.

    Nested values: ``batchers`` (per peer) → ``relay_batch_*{peer}``; ``placed``
    and the router's ``loads`` (per CallActor) → ``{actor}``; the router's
    ``grants`` (per shard) → ``relay_slots_granted{shard}``. Connection keys
    (``conn.`` prefixed inside a connection actor): ``violation.<code>`` →
    ``relay_protocol_violations{code}``, other dotted keys are event types →
    ``relay_events{event_type}``. Other unknown numeric keys → ``relay_stat{key}``.
    Samples of one metric with the same tags are summed.
    """
    cap = cap or Capper()
    own = _BY_COMPONENT.get(component, {})
    acc: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(name: str, value: float, **tags: str) -> None:
        key = (name, tuple(sorted(tags.items())))
        acc[key] = acc.get(key, 0.0) + value

    for raw_key, value in stats.items():
        key = raw_key[5:] if raw_key.startswith("conn.") else raw_key
        if key in _IGNORED or key in _REPEATED.get(component, ()):
            continue
        if isinstance(value, dict):
            _flatten_nested(component, key, value, add, cap)
            continue
        num = _number(value)
        if num is None:
            continue
        mapped = own.get(key) or _COMMON.get(key)
        if mapped is not None:
            add(mapped[0], num, **mapped[1])
        elif key.startswith("violation."):
            add("relay_protocol_violations", num, code=cap("code", key[len("violation.") :]))
        elif "." in key:
            add("relay_events", num, event_type=cap("event_type", key))
        else:
            add("relay_stat", num, key=cap("key", raw_key))
    if component == "client" and "offers" in stats and "offers_admitted" not in stats:
        # The in-process client counts no admissions: offers that were not refused.
        refused_keys = ("offers_invalid", "offers_dropped", "offers_passed")
        refused = sum(_number(stats.get(k)) or 0.0 for k in refused_keys)
        add("relay_offers", max(0.0, (_number(stats["offers"]) or 0.0) - refused), outcome="admitted")
    return [Sample(name, tags, value) for (name, tags), value in acc.items()]


def _flatten_nested(
    component: str, key: str, value: dict[Any, Any], add: Callable[..., None], cap: Callable[[str, str], str]
) -> None:
    if key == "batchers":
        peer_kind = "call_actor" if component == "connection" else "connection"
        for peer, bstats in value.items():
            if not isinstance(bstats, dict):
                continue
            for bkey, metric in _BATCH.items():
                num = _number(bstats.get(bkey))
                if num is not None:
                    add(metric, num, peer=cap("peer", f"{peer_kind}:{peer}"))
    elif key == "links":
        peer_kind = "call_actor" if component == "connection" else "connection"
        for peer, lstats in value.items():
            if not isinstance(lstats, dict):
                continue
            if peer == "_process":
                for lkey, event in _LINK_EVENTS.items():
                    num = _number(lstats.get(lkey))
                    if num is not None:
                        add("relay_link_events", num, event=event)
                continue
            tag = cap("peer", f"{peer_kind}:{peer}")
            for lkey, (metric, fixed) in _LINK.items():
                num = _number(lstats.get(lkey))
                if num is not None:
                    add(metric, num, peer=tag, **fixed)
            lag = _number(lstats.get("peer_lag_ms"))
            if lag is not None:
                add("relay_link_peer_lag_seconds", lag / 1000.0, peer=tag)
    elif key in ("placed", "loads"):
        metric = "relay_placed_calls" if key == "placed" else "relay_call_actor_load"
        for idx, count in value.items():
            num = _number(count)
            if num is not None:
                add(metric, num, actor=cap("actor", str(idx)))
    elif key == "standby":
        # (0 for a shard without a standby: the series exists, the dashboard's panel has data)
        add("relay_standby_takeovers", _number(value.get("takeovers")) or 0.0)
    elif key == "grants":
        for shard, count in value.items():
            num = _number(count)
            if num is not None:
                add("relay_slots_granted", num, shard=cap("shard", str(shard)))
    # other nested values are not exported


def resolve_metrics_config(port: int | None = None, host: str | None = None) -> dict[str, Any]:
    """``port`` (None: ``RELAY_METRICS_PORT``, else :data:`DEFAULT_METRICS_PORT`; -1 or
    ``off``: none), ``host`` (None: ``RELAY_METRICS_HOST``, else the router's node) and
    ``interval`` (``RELAY_METRICS_INTERVAL``) of an app's metrics endpoint."""
    if port is None:
        raw = os.environ.get("RELAY_METRICS_PORT", "").strip()
        if raw.lower() in ("off", "none", "-1"):
            port = -1
        elif raw:
            try:
                port = int(raw)
            except ValueError:
                raise ArgumentError(
                    f"RELAY_METRICS_PORT must be a port number or 'off', not {raw!r}"
                ) from None
        else:
            port = DEFAULT_METRICS_PORT
    if not -1 <= port <= 65535:
        raise ArgumentError(f"metrics port must be 0..65535 (or -1 for none), not {port}")
    try:
        interval = float(os.environ.get("RELAY_METRICS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        interval = DEFAULT_INTERVAL
    return {
        "port": None if port < 0 else port,
        "host": host or os.environ.get("RELAY_METRICS_HOST") or None,
        "interval": interval if interval > 0 else DEFAULT_INTERVAL,
    }


def serve_local_metrics(client: Any, port: int | None = None, app: str = "local") -> tuple[Any, str]:
    """Serve an in-process client's metrics on ``port`` (None: as :func:`resolve_metrics_config`
    says) on 127.0.0.1. Returns the server (None if none) and its URL or why there is none;
    a port in use is reported, not raised."""
    port = resolve_metrics_config(port)["port"]
    if port is None:
        return None, "none (turned off)"
    try:
        server, port = serve_client_metrics(client, port, app=app)
    except OSError as exc:
        return None, (
            f"none (port {port}: {exc.strerror or exc}; pick another with --metrics-port or "
            "RELAY_METRICS_PORT, 0 for any free port)"
        )
    return server, f"http://127.0.0.1:{port}/metrics"


# --- Prometheus families ---------------------------------------------------------


#: One exported series: metric name, labels (every tag key of the metric), value.
Series = tuple[str, dict[str, str], float]


def families(series: Iterable[Series], prefix: str = "") -> list[Any]:
    """``prometheus_client`` metric families of ``series``, one per metric, every label of
    the metric present (empty when it does not apply). Counters get ``_total`` when scraped."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out: dict[str, Any] = {}
    for name, labels, value in series:
        d = METRICS[name]
        family = out.get(name)
        if family is None:
            family_cls = CounterMetricFamily if d.kind == "counter" else GaugeMetricFamily
            family = out[name] = family_cls(prefix + name, d.help, labels=d.tag_keys)
        family.add_metric([labels.get(k, "") for k in d.tag_keys], value)
    return list(out.values())


def _series(base: dict[str, str], samples: Iterable[Sample]) -> Iterator[Series]:
    for s in samples:
        yield s.name, {**base, **dict(s.tags)}, s.value


# --- one app's components, polled (Ray) --------------------------------------------


@dataclass(frozen=True)
class Report:
    """What one poll got from one component: ``stats`` is None when it did not answer.

    ``component``, ``shard`` and ``actor`` name the component (its series); ``node``
    is where it runs now (a label, not part of its identity).
    """

    component: str
    stats: dict[str, Any] | None
    shard: str = ""
    actor: str = ""
    node: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.component, self.shard, self.actor)


_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Source:
    """One component's state between polls."""

    cap: Capper
    identity: str | None = None
    answered: float | None = None
    node: str = ""
    #: The samples of its last answer, counters already made monotonic.
    samples: list[Sample] | None = None
    #: Per counter series: the last count read and what earlier counts add to it.
    raw: dict[_SeriesKey, float] | None = None
    offset: dict[_SeriesKey, float] | None = None
    #: Counter series of an earlier process the new one has not counted in yet: still
    #: exported (at their offset), or they would vanish at every restart.
    carried: set[_SeriesKey] | None = None


def _identity(stats: dict[str, Any]) -> str | None:
    """A process's identity in its stats: a CallActor's incarnation, else node and pid."""
    if stats.get("incarnation"):
        return str(stats["incarnation"])
    if "pid" in stats:
        return f"{stats.get('node_id', '')}:{stats['pid']}"
    return None


class AppSeries:
    """The latest series of one app's live components (sans-IO: fed by a poller).

    Each :meth:`update` gets one :class:`Report` per component the app has now.
    Components not reported are forgotten (their series vanish); one that did not
    answer keeps its last series for ``stale_after`` seconds, then shows none until
    it answers again. Counters are made monotonic per series (see the module
    docstring): a new process identity or a lower count adds the count read before
    to the series' offset.

    Args:
        app: the ``app`` label of every series.
        stale_after: seconds a silent component's last series stay exported.
    """

    def __init__(self, app: str, stale_after: float) -> None:
        self.app = app
        self.stale_after = stale_after
        self.sources: dict[tuple[str, str, str], _Source] = {}

    def update(self, now: float, reports: Iterable[Report]) -> None:
        """Apply one poll's reports (``now``: a monotonic time)."""
        seen = set()
        for report in reports:
            seen.add(report.key)
            source = self.sources.get(report.key)
            if source is None:
                source = self.sources[report.key] = _Source(Capper(), raw={}, offset={}, carried=set())
            if report.stats is None:
                if source.answered is None or now - source.answered > self.stale_after:
                    source.samples = None
                continue
            self._apply(source, report, now)
        for key in self.sources.keys() - seen:
            del self.sources[key]

    @staticmethod
    def _apply(source: _Source, report: Report, now: float) -> None:
        assert report.stats is not None
        assert source.raw is not None and source.offset is not None and source.carried is not None
        raw, offset, carried = source.raw, source.offset, source.carried
        identity = _identity(report.stats)
        if source.identity is not None and identity is not None and identity != source.identity:
            # A new process counts from zero: what the old one counted carries on.
            for key, last in raw.items():
                offset[key] = offset.get(key, 0.0) + last
                raw[key] = 0.0
            carried.update(raw)
        source.identity = identity or source.identity
        source.answered = now
        source.node = report.node
        samples = []
        for s in flatten(report.component, report.stats, source.cap):
            if METRICS[s.name].kind == "counter":
                key = (s.name, s.tags)
                before = raw.get(key)
                if before is not None and s.value < before:
                    offset[key] = offset.get(key, 0.0) + before  # reset in place (a link rebuilt)
                raw[key] = s.value
                carried.discard(key)
                s = Sample(s.name, s.tags, offset.get(key, 0.0) + s.value)
            samples.append(s)
        samples.extend(Sample(name, tags, offset[(name, tags)]) for name, tags in carried)
        source.samples = samples

    def series(self) -> list[Series]:
        """Every exported series now."""
        out: list[Series] = []
        for (component, shard, actor), source in self.sources.items():
            if source.samples is None:
                continue
            base = {"app": self.app, "component": component, "shard": shard, "actor": actor}
            base["node"] = source.node
            out.extend(_series(base, source.samples))
        return out


# --- in-process -------------------------------------------------------------------


class ClientCollector:
    """A ``prometheus_client`` collector over an in-process ``RelayClient.stats()``.

    Args:
        client: anything with a ``stats()`` method returning a dict (a ``RelayClient``).
        app: the ``app`` label.
        prefix: prepended to every name (the same names as on Ray without one).
    """

    def __init__(self, client: Any, app: str = "local", prefix: str = "") -> None:
        self.client = client
        self.app = app
        self.prefix = prefix
        self.cap = Capper()

    def _stats(self) -> dict[str, Any]:
        # Read from the HTTP server's thread while the loop runs: retry a copy that raced.
        for _ in range(5):
            try:
                stats = dict(self.client.stats())
                break
            except RuntimeError:
                time.sleep(0.001)
        else:
            return {}
        settings = getattr(self.client, "_settings", None)
        budget = getattr(settings, "max_active_calls", None)
        if isinstance(budget, int) and "budget" not in stats:
            stats["budget"] = budget
        return stats

    def describe(self) -> list[Any]:
        return []  # unchecked collector: names are fixed by METRICS anyway

    def collect(self) -> Iterator[Any]:
        base = {"app": self.app, "component": "client"}
        try:
            samples = flatten("client", self._stats(), self.cap)
        except Exception:
            log.warning("client metrics collection failed", exc_info=True)
            return
        yield from families(_series(base, samples), self.prefix)


class SeriesCollector:
    """A ``prometheus_client`` collector serving whatever ``source()`` returns now."""

    def __init__(self, source: Callable[[], list[Any]]) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self.source()


def serve_registry(collector: Any, port: int, addr: str) -> tuple[Any, int]:
    """Serve ``collector`` alone at ``http://addr:port/metrics`` (the process-global
    registry is left alone). Returns the HTTP server (``server.shutdown()`` and
    ``server.server_close()`` stop it) and the port it listens on (useful with ``port=0``).

    Raises:
        OSError: the port is taken (or the address is not this host's).
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server, server.server_address[1]


def serve_client_metrics(
    client: Any, port: int = 0, *, addr: str = "127.0.0.1", app: str = "local", prefix: str = ""
) -> tuple[Any, int]:
    """Serve an in-process client's metrics at ``http://addr:port/metrics``.

    Uses its own registry (the process-global one is left alone). Returns the
    HTTP server (``server.shutdown()`` stops it) and the port it listens on
    (useful with ``port=0``).
    """
    return serve_registry(ClientCollector(client, app=app, prefix=prefix), port, addr)


def metric_names(prefix: str = "") -> Iterable[str]:
    """The scraped names (``prefix`` + name, ``_total`` for counters)."""
    for d in _DEFS:
        yield prefix + d.name + ("_total" if d.kind == "counter" else "")
