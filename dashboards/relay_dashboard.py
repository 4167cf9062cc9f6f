"""The relay-actors dashboard: admission, connection, CallActors, batches, links, Ray resources.

Queries use the names an app's metrics endpoint serves (``relay_*``, counters
``_total``; see ``relay_actors.metrics``): on Ray the router's endpoint, in-process
``serve_client_metrics(client)``, which fills the same panels (as
``component="client"``; the CallActor panels stay empty for it). The "Ray resources"
row reads Ray's own node and process metrics (``ray_node_*``, ``ray_component_*``)
from Ray's metrics agent, a separate scrape job (``cluster/prometheus/prometheus.yml``).
The "Traces" row (collapsed) searches a Tempo data source, ``${traces}``, for the
calls' traces (``relay_actors.tracing``); it is optional.
"""

from __future__ import annotations

from .common import Choice, Dashboard, Panel, Row, Target, TracePanel, Variable

APP = 'app=~"$app"'
RI = "$__rate_interval"
RELAY_ACTORS = 'Component=~"ray::(ConnectionActor|Router|CallActor)"'
#: Ray's node and process gauges are exported only around each reporter update (every
#: few seconds), so a scrape can miss them: the Ray panels take the last value seen.
#: Where offers are decided: connection actors on Ray, the client in-process.
EDGE = f'component=~"connection|client",{APP}'


def rate(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RI}]))"


def increase(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (increase({metric}{{{selector}}}[{RI}]))"


ADMISSION = Row(
    1,
    "Admission",
    [
        Panel(
            2,
            "Active calls vs limit",
            "Calls in progress against max_active_calls, per app: the router's cluster-wide count "
            "on Ray, the client's own count in-process.",
            [
                Target(
                    f'sum by (app) (relay_active_calls{{component=~"router|client",{APP}}})',
                    "active {{app}}",
                ),
                Target(
                    f'max by (app) (relay_call_budget{{component=~"router|client",{APP}}})',
                    "limit {{app}}",
                ),
            ],
        ),
        Panel(
            3,
            "Offers by outcome",
            "Inbound call offers per second: received, admitted, dropped or passed (over the limit), "
            "no_capacity (no CallActor took it), invalid.",
            [Target(rate("relay_offers_total", EDGE, "app, outcome"), "{{app}} {{outcome}}")],
            unit="ops",
        ),
        Panel(
            4,
            "Admission slots and waiting offers",
            "Slots leased to each connection actor (router view) and offers waiting for a slot "
            "or a CallActor.",
            [
                Target(
                    f'sum by (app, shard) (relay_slots_granted{{component="router",{APP}}})',
                    "granted {{app}} shard {{shard}}",
                ),
                Target(
                    f"sum by (app, shard) (relay_waiting_offers{{{APP}}})",
                    "waiting {{app}} shard {{shard}}",
                ),
            ],
        ),
        Panel(
            5,
            "Slot leases",
            "Admission slots leased and returned per second, and slots asked for but refused "
            "because the budget was used up.",
            [
                Target(rate("relay_slots_leased_total", APP, "app"), "leased {{app}}"),
                Target(rate("relay_slots_returned_total", APP, "app"), "returned {{app}}"),
                Target(rate("relay_lease_shortfall_total", APP, "app"), "shortfall {{app}}"),
            ],
            unit="ops",
        ),
    ],
)

CONNECTION = Row(
    10,
    "Connection",
    [
        Panel(
            11,
            "Events by type",
            "Server events received per second, by event type.",
            [Target(rate("relay_events_total", EDGE, "event_type"), "{{event_type}}")],
            unit="ops",
            stack=True,
        ),
        Panel(
            12,
            "Requests in flight and errors",
            "JSON-RPC requests waiting for a result (connection side and CallActor side), and "
            "per-second errors: queue full while disconnected, unroutable events, CallActor item errors.",
            [
                Target(
                    f"sum by (component) (relay_pending_requests{{{APP}}})", "in flight ({{component}})"
                ),
                Target(f"sum by (component) (relay_queued_frames{{{APP}}})", "queued ({{component}})"),
                Target(rate("relay_queue_full_total", APP, "component"), "queue full/s ({{component}})"),
                Target(
                    rate("relay_events_unroutable_total", APP, "component"),
                    "unroutable/s ({{component}})",
                ),
                Target(rate("relay_item_errors_total", APP, "outcome"), "item {{outcome}}/s"),
            ],
        ),
        Panel(
            13,
            "Reconnects and resumes",
            "WebSocket reconnections, resumed sessions and connection attempts in each interval, "
            "shards taken over by their warm standby; sessions up.",
            [
                Target(
                    increase("relay_reconnects_total", APP, "app, shard"), "reconnects {{app}} {{shard}}"
                ),
                Target(
                    increase("relay_standby_takeovers_total", APP, "app, shard"),
                    "standby takeovers {{app}} {{shard}}",
                ),
                Target(increase("relay_resumes_total", APP, "app, shard"), "resumes {{app}} {{shard}}"),
                Target(
                    increase("relay_connect_attempts_total", APP, "app, shard"),
                    "attempts {{app}} {{shard}}",
                ),
                Target(f"sum by (app) (relay_connected{{{APP}}})", "connected {{app}}"),
            ],
        ),
        Panel(
            14,
            "Protocol violations",
            "Frames dropped as RELAY protocol violations in each interval, by code; server "
            "disconnect orders.",
            [
                Target(increase("relay_protocol_violations_total", APP, "code"), "{{code}}"),
                Target(
                    increase("relay_server_disconnects_total", APP, "app"), "server disconnect {{app}}"
                ),
            ],
        ),
        Panel(
            15,
            "Acks and duplicates",
            "Acks sent per second, and redelivered events recognised (delivered once) per second.",
            [
                Target(rate("relay_acks_sent_total", APP, "app"), "acks {{app}}"),
                Target(
                    rate("relay_duplicate_events_total", APP, "component"), "duplicates {{component}}"
                ),
            ],
            unit="ops",
        ),
    ],
)

CALL_ACTORS = Row(
    20,
    "CallActors",
    [
        Panel(
            21,
            "Calls per CallActor",
            "Calls each CallActor hosts (its own count) and the load the router has placed on it.",
            [
                Target(
                    f'sum by (app, actor) (relay_active_calls{{component="call_actor",{APP}}})',
                    "{{app}} actor {{actor}}",
                ),
                Target(
                    f'sum by (app, actor) (relay_call_actor_load{{component="router",{APP}}})',
                    "{{app}} actor {{actor}} (router)",
                ),
            ],
        ),
        Panel(
            22,
            "Handlers finished",
            "on_call handlers finished per second, by outcome.",
            [Target(rate("relay_handlers_total", APP, "outcome"), "{{outcome}}")],
            unit="ops",
            stack=True,
        ),
        Panel(
            23,
            "Handler errors and timeouts per CallActor",
            "Handlers that raised or ran over handler_timeout in each interval, per CallActor "
            "(the in-process client shows as component client).",
            [
                Target(
                    increase(
                        "relay_handlers_total",
                        f'outcome=~"error|timeout",{APP}',
                        "component, actor, outcome",
                    ),
                    "{{component}} {{actor}} {{outcome}}",
                ),
            ],
        ),
        Panel(
            24,
            "Handler tasks and pending requests",
            "Handler tasks running and requests waiting for results in each CallActor.",
            [
                Target(
                    f'sum by (actor) (relay_handler_tasks{{component="call_actor",{APP}}})',
                    "tasks actor {{actor}}",
                ),
                Target(
                    f'sum by (actor) (relay_pending_requests{{component="call_actor",{APP}}})',
                    "requests actor {{actor}}",
                ),
            ],
        ),
        Panel(
            25,
            "CallActor restarts and calls lost",
            "CallActor restarts noticed by the router and what became of the calls of a lost "
            "CallActor (lost, hung_up, rehomed), in each interval; CallActors in the pool.",
            [
                Target(increase("relay_call_actor_restarts_total", APP, "app"), "restarts {{app}}"),
                Target(
                    increase("relay_lost_actor_calls_total", APP, "app, outcome"), "calls {{outcome}}"
                ),
                Target(
                    increase("relay_double_assignments_total", APP, "app"), "double assignments {{app}}"
                ),
                Target(f'sum by (app) (relay_call_actors{{component="router",{APP}}})', "pool {{app}}"),
            ],
        ),
        Panel(
            27,
            "Calls per node",
            "Calls the CallActors on each Ray node host, and the CallActors there.",
            [
                Target(
                    f'sum by (app, node) (relay_active_calls{{component="call_actor",{APP}}})',
                    "calls {{app}} {{node}}",
                ),
                Target(
                    f'count by (app, node) (relay_active_calls{{component="call_actor",{APP}}})',
                    "CallActors {{app}} {{node}}",
                ),
            ],
        ),
        Panel(
            26,
            "Offers at CallActors",
            "Offers CallActors accepted or refused (full) per second.",
            [
                Target(
                    rate("relay_call_actor_offers_total", APP, "actor, outcome"),
                    "actor {{actor}} {{outcome}}",
                )
            ],
            unit="ops",
        ),
    ],
)

_LINK = "component, shard, actor, peer"
BATCHES = Row(
    30,
    "Batches between actors",
    [
        Panel(
            31,
            "Items per batch, per link",
            "Average items carried by one actor call, per link (connection shard → CallActor, "
            "CallActor → connection shard): rate(items) / rate(sends).",
            [
                Target(
                    f"{rate('relay_batch_items_total', APP, _LINK)} / "
                    f"{rate('relay_batch_sends_total', APP, _LINK)}",
                    "{{component}} {{shard}}{{actor}} → {{peer}}",
                )
            ],
        ),
        Panel(
            32,
            "Batch sends and largest batch",
            "Batched actor calls per second per link, and the largest batch sent so far.",
            [
                Target(
                    rate("relay_batch_sends_total", APP, _LINK),
                    "sends/s {{component}} {{shard}}{{actor}} → {{peer}}",
                ),
                Target(
                    f"max by ({_LINK}) (relay_batch_largest{{{APP}}})",
                    "largest {{component}} {{shard}}{{actor}} → {{peer}}",
                ),
            ],
        ),
    ],
)

_PEER = "component, shard, actor, peer"
LINKS = Row(
    50,
    "Actor links (data path)",
    [
        Panel(
            51,
            "Link traffic",
            "Frames per second per link and direction (connection shard ↔ CallActor); frames sent "
            "again after a reconnect are relay_link_resent_total.",
            [
                Target(
                    rate("relay_link_frames_total", APP, f"{_PEER}, direction"),
                    "{{direction}} {{component}} {{shard}}{{actor}} ↔ {{peer}}",
                ),
            ],
            unit="ops",
        ),
        Panel(
            52,
            "Acknowledgement latency",
            "Average seconds from sending a frame to the peer's acknowledgement, per link: how long "
            "RELAY events wait for their ack.",
            [
                Target(
                    f"{rate('relay_link_ack_latency_seconds_sum_total', APP, _PEER)} / "
                    f"{rate('relay_link_ack_latency_seconds_count_total', APP, _PEER)}",
                    "{{component}} {{shard}}{{actor}} → {{peer}}",
                )
            ],
            unit="s",
        ),
        Panel(
            53,
            "Window and queue",
            "Unacknowledged frames (window) and items waiting to be framed, per link. A full window "
            "or a growing queue is a slow peer.",
            [
                Target(f"max by ({_PEER}) (relay_link_window{{{APP}}})", "window {{actor}} → {{peer}}"),
                Target(f"max by ({_PEER}) (relay_link_pending{{{APP}}})", "queued {{actor}} → {{peer}}"),
            ],
        ),
        Panel(
            54,
            "Event-loop lag and slow CallActors",
            "How late each actor's event loop runs (a blocking handler shows here), and the CallActors "
            "each connection actor places no new calls on.",
            [
                Target(
                    "max by (component, shard, actor) "
                    f"(relay_loop_lag_seconds{{{APP}}})",
                    "lag {{component}} {{shard}}{{actor}}",
                ),
                Target(
                    f"max by (shard) (relay_call_actors_unavailable{{{APP}}})",
                    "unavailable (shard {{shard}})",
                ),
            ],
        ),
        Panel(
            55,
            "Link events",
            "Handshakes accepted and refused (wrong secret, bad frames), timeouts, evictions of idle "
            "handshakes, reconnects, peer restarts, slow peers.",
            [Target(increase("relay_link_events_total", APP, "event"), "{{event}}")],
        ),
    ],
)

RAY = Row(
    40,
    "Ray resources",
    [
        Panel(
            41,
            "CPU of the relay actors",
            "CPUs used by the connection actors, routers and CallActors (Ray's per-process metrics).",
            [
                Target(
                    "sum by (Component) "
                    f"(last_over_time(ray_component_cpu_percentage{{{RELAY_ACTORS}}}[{RI}])) / 100",
                    "{{Component}}",
                )
            ],
        ),
        Panel(
            42,
            "Memory of the relay actors",
            "Unique memory (USS) of the connection actors, routers and CallActors.",
            [
                Target(
                    f"sum by (Component) (last_over_time(ray_component_uss_bytes{{{RELAY_ACTORS}}}[{RI}]))",
                    "{{Component}}",
                )
            ],
            unit="bytes",
        ),
        Panel(
            43,
            "Node CPU",
            "CPU utilisation of each Ray node.",
            [Target(f"avg by (instance) (last_over_time(ray_node_cpu_utilization[{RI}]))", "{{instance}}")],
            unit="percent",
        ),
        Panel(
            44,
            "Node memory",
            "Memory used on each Ray node.",
            [
                Target(f"sum by (instance) (last_over_time(ray_node_mem_used[{RI}]))", "used {{instance}}"),
                Target(f"sum by (instance) (last_over_time(ray_node_mem_total[{RI}]))", "total {{instance}}"),
            ],
            unit="bytes",
        ),
    ],
)

#: The root span of every call's trace and the attributes the table shows
#: (``relay_actors.tracing``); ``$slow_call`` is a TraceQL duration (``400ms``, ``2s``).
SLOW_CALLS_QUERY = (
    '{ name = "relay.call" && duration > $slow_call } '
    "| select(span.relay.call_id, span.relay.app, span.relay.context, span.relay.end_reason)"
)

TRACES = Row(
    60,
    "Traces",
    [
        TracePanel(
            61,
            "Slowest recent calls",
            "Calls (root span relay.call) that lasted longer than the Slow call variable, from the "
            "Tempo data source of the traces variable; the slowest first. A row's trace ID opens the "
            "call's trace. Needs tracing on (docs: How-to, Tracing calls) and a Tempo data source.",
            SLOW_CALLS_QUERY,
        ),
    ],
    collapsed=True,
)

DASHBOARD = Dashboard(
    uid="relay-actors-overview",
    title="relay-actors: RELAY calls on Ray",
    description="Admission, connections, CallActors and batches of relay-actors apps; Ray resources.",
    rows=[ADMISSION, CONNECTION, CALL_ACTORS, BATCHES, LINKS, RAY, TRACES],
    variables=[
        Variable("app", "App", "label_values(relay_active_calls, app)"),
        Choice(
            "slow_call",
            "Slow call",
            ["200ms", "400ms", "1s", "2s", "5s", "30s"],
            "400ms",
            "Calls longer than this are listed in the Traces row.",
        ),
    ],
    tags=["relay-actors", "ray"],
)
DASHBOARD.check()  # ids unique at import, as Ray does
