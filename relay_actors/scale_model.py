"""The scale model: how many connection shards, CallActors, cores and GiB an app on Ray needs
for N concurrent calls and M calls/s, and which part saturates first.

Plain arithmetic over measured per-component costs (no Ray here): ``Costs`` holds what one
call, one held call, one idle process and one node cost, measured with
``benchmarks/check_scale_model.py --nodes 1`` on a quiet 2-core machine (CPU per kind of
process as the slope of its own CPU time over idle, 20 and 50 calls/s; memory per held call
from PSS); ``plan`` turns them into a layout. ``benchmarks/check_scale_model.py --nodes 3``
checks a prediction against a 3-node cluster (within 25% on CPU and memory). The docs' scale
model page prints the table for 10k/100k concurrent calls and 1k/10k calls/s; costs per call
fall at higher rates (loops batch more per wake-up), so there the model errs towards more.

    python -m relay_actors.scale_model --concurrent 10000 --rate 1000 [--cores-per-node 16]

The rules:

- Every actor is one asyncio loop, so one actor uses at most one core; the model keeps
  each below ``Costs.utilisation`` of a core (headroom for bursts, GC, restarts).
- A connection shard carries ``rate / shards`` calls/s: its loop's CPU, and its WebSocket's
  frames (``frames_per_call`` both ways) under ``ws_frames_per_s``.
- CallActors: enough for the held calls (``calls_per_actor`` each, ``RayOptions``' default)
  and for their loops' CPU, at least ``min_call_actors``.
- The router is one per app, off the per-call path but still paid per call (leases and
  reports): its loop is the app's ceiling; past it, split the traffic over several apps.
- Cores: the busy CPU (per-call costs times the rate, plus every process's idle cost) over the
  utilisation; nodes: cores over ``cores_per_node``, each node with its Ray daemons.
- Memory: each process's fixed PSS, each node's Ray daemons, and each held call's state in
  its CallActor and its connection actor.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

#: The parts whose ceiling (calls/s of one of them) can be the first bottleneck.
BOTTLENECKS = ("websocket", "connection actor", "router", "CallActor")


@dataclass(frozen=True)
class Costs:
    """Measured costs (see the module's docstring for where each comes from).

    CPU figures are µs of CPU per call (the benchmark's call: answer, play TTS, wait for it,
    hang up — ``frames_per_call`` RELAY frames both ways) on top of each process's idle
    cost; memory is PSS.
    """

    #: RELAY frames per call on the WebSocket, both ways (the benchmark's flow: ~9 each way).
    frames_per_call: float = 18.4
    #: µs of CPU per call in a connection actor (parse, admit, place, relay events and commands).
    connection_us_per_call: float = 2755.0
    #: µs of CPU per call in the router (leases, reports).
    router_us_per_call: float = 132.0
    #: µs of CPU per call in a CallActor (the handler and its Call).
    call_actor_us_per_call: float = 1478.0
    #: µs of CPU per call in Ray's own processes (raylet, GCS, agents) and the driver.
    ray_us_per_call: float = 0.0
    #: ms of CPU per second of one idle actor process (its timers).
    idle_ms_per_s_per_actor: float = 17.8
    #: ms of CPU per second of one idle node's Ray daemons (raylet, agents, log monitor).
    idle_ms_per_s_per_node: float = 32.2
    #: ms of CPU per second of what only the head runs, idle (GCS, dashboard head, autoscaler
    #: monitor, the driver).
    head_idle_ms_per_s: float = 19.1
    #: PSS of one actor process with no calls (MiB).
    actor_pss_mib: float = 62.7
    #: PSS of one node's Ray daemons (MiB): raylet, agents, log monitor, idle workers.
    node_pss_mib: float = 206.0
    #: PSS of what only the head runs (MiB): GCS, dashboard head, autoscaler monitor, the driver.
    head_pss_mib: float = 257.2
    #: PSS per held (answered, playing) call in its CallActor (KiB).
    call_actor_kib_per_call: float = 3.2
    #: PSS per held call in its connection actor (KiB): its route, its session state.
    connection_kib_per_call: float = 0.95
    #: Frames/s one WebSocket carries (server push, ~300-byte frames, loopback).
    ws_frames_per_s: float = 100_000.0
    #: Share of one core the model lets any one loop use.
    utilisation: float = 0.7
    #: Calls one CallActor hosts at most (``RayOptions.calls_per_actor``).
    calls_per_actor: int = 5000
    #: CallActors at least (``RayOptions.min_call_actors``).
    min_call_actors: int = 2

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0 or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"Costs.{name} must be a number >= 0, not {value!r}")
        if not 0 < self.utilisation <= 1:
            raise ValueError("Costs.utilisation must be in (0, 1]")
        if self.calls_per_actor < 1 or self.min_call_actors < 1 or self.frames_per_call <= 0:
            raise ValueError("calls_per_actor, min_call_actors and frames_per_call must be positive")

    def ceilings(self) -> dict[str, float]:
        """Calls/s that one of each part carries at ``utilisation`` (inf: costs nothing)."""

        def per_loop(us: float) -> float:
            return self.utilisation * 1e6 / us if us > 0 else math.inf

        return {
            "websocket": self.ws_frames_per_s / self.frames_per_call,
            "connection actor": per_loop(self.connection_us_per_call),
            "router": per_loop(self.router_us_per_call),
            "CallActor": per_loop(self.call_actor_us_per_call),
        }


@dataclass(frozen=True)
class Plan:
    """What a deployment needs for ``concurrent`` calls held and ``rate`` new calls/s."""

    concurrent: int
    rate: float
    cores_per_node: int
    shards: int
    call_actors: int
    nodes: int
    #: CPU the app keeps busy (cores), and the cores to provision (busy / utilisation).
    busy_cores: float
    cores: int
    memory_gib: float
    #: The part with the lowest ceiling (calls/s of one of it): the first to saturate.
    first_bottleneck: str
    ceilings: dict[str, float] = field(default_factory=dict)
    #: The router's share of its core at ``rate``: above ``utilisation``, one app cannot
    #: carry the rate (split the traffic over several apps).
    router_load: float = 0.0
    #: Why this layout (which need set the number of shards and CallActors).
    notes: tuple[str, ...] = ()

    @property
    def fits_one_app(self) -> bool:
        """Whether one app's router carries the rate (below one core; the plan keeps headroom)."""
        return self.router_load <= 1.0


def plan(concurrent: int, rate: float, cores_per_node: int = 16, costs: Costs | None = None) -> Plan:
    """The layout for ``concurrent`` held calls and ``rate`` calls/s (see the module's rules)."""
    if concurrent < 0 or rate < 0 or not math.isfinite(rate):
        raise ValueError("concurrent and rate must be finite numbers >= 0")
    if cores_per_node < 1:
        raise ValueError("cores_per_node must be at least 1")
    c = costs or Costs()
    ceilings = c.ceilings()
    shard_ceiling = min(ceilings["websocket"], ceilings["connection actor"])
    shards = max(1, math.ceil(rate / shard_ceiling))
    by_calls = math.ceil(concurrent / c.calls_per_actor)
    by_cpu = math.ceil(rate / ceilings["CallActor"]) if ceilings["CallActor"] < math.inf else 0
    call_actors = max(c.min_call_actors, by_calls, by_cpu)
    notes = [
        f"shards: {rate:g}/s over {shard_ceiling:.0f}/s per shard "
        f"({'its WebSocket' if ceilings['websocket'] <= ceilings['connection actor'] else 'its loop'})",
        f"CallActors: {by_calls} for the held calls ({c.calls_per_actor} each), {by_cpu} for CPU,"
        f" at least {c.min_call_actors}",
    ]
    nodes = 1
    for _ in range(10):  # the nodes' own costs depend on how many: settle
        busy, memory_mib = predict_usage(rate, concurrent, shards, call_actors, nodes, c)
        cores = max(1, math.ceil(busy / c.utilisation))
        wanted = max(1, math.ceil(cores / cores_per_node))
        if wanted == nodes:
            break
        nodes = wanted
    router_load = rate * c.router_us_per_call / 1e6
    if router_load > c.utilisation:
        notes.append(
            f"the router would be {router_load:.0%} busy (> {c.utilisation:.0%}): one app cannot "
            f"carry {rate:g}/s; split the traffic over {math.ceil(router_load / c.utilisation)} apps"
        )
    return Plan(
        concurrent=concurrent,
        rate=rate,
        cores_per_node=cores_per_node,
        shards=shards,
        call_actors=call_actors,
        nodes=nodes,
        busy_cores=busy,
        cores=cores,
        memory_gib=memory_mib / 1024,
        first_bottleneck=min(BOTTLENECKS, key=lambda k: ceilings[k]),
        ceilings=ceilings,
        router_load=router_load,
        notes=tuple(notes),
    )


def node_capacity(concurrent: int, cores_per_node: int = 16, costs: Costs | None = None) -> float:
    """The highest rate (calls/s, to 1%) that one node of ``cores_per_node`` carries with
    ``concurrent`` calls held (0 if even no load needs more than one node)."""
    if plan(concurrent, 0, cores_per_node, costs).nodes > 1:
        return 0.0
    low, high = 0.0, 1.0
    while plan(concurrent, high, cores_per_node, costs).nodes == 1:
        low, high = high, high * 2
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if plan(concurrent, mid, cores_per_node, costs).nodes == 1 else (low, mid)
    return low


def predict_usage(
    rate: float, held: int, shards: int, call_actors: int, nodes: int, costs: Costs | None = None
) -> tuple[float, float]:
    """What a given layout uses: (busy cores, PSS in MiB) at ``rate`` calls/s with ``held``
    calls held — the figures a measured run is compared with."""
    c = costs or Costs()
    processes = shards + call_actors + 1
    per_call_s = (
        c.connection_us_per_call + c.router_us_per_call + c.call_actor_us_per_call + c.ray_us_per_call
    ) / 1e6
    busy = (
        rate * per_call_s
        + (processes * c.idle_ms_per_s_per_actor + nodes * c.idle_ms_per_s_per_node + c.head_idle_ms_per_s)
        / 1000
    )
    memory_mib = (
        processes * c.actor_pss_mib
        + nodes * c.node_pss_mib
        + c.head_pss_mib
        + held * (c.call_actor_kib_per_call + c.connection_kib_per_call) / 1024
    )
    return busy, memory_mib


def table(plans: Sequence[Plan]) -> str:
    """A Markdown table of plans."""
    lines = [
        "| concurrent calls | calls/s | shards | CallActors | busy cores | cores | nodes | GiB"
        " | first bottleneck |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in plans:
        router = "" if p.router_load <= 1.0 else f" (router {p.router_load:.0%}: split the app)"
        lines.append(
            f"| {p.concurrent:,} | {p.rate:,.0f} | {p.shards} | {p.call_actors} | {p.busy_cores:.1f} |"
            f" {p.cores} | {p.nodes} | {p.memory_gib:.1f} | {p.first_bottleneck}{router} |"
        )
    return "\n".join(lines)


def describe(p: Plan) -> str:
    """A plan in a few lines (the CLI's output)."""
    ceilings = ", ".join(f"{k} {v:,.0f}/s" for k, v in p.ceilings.items())
    return "\n".join(
        [
            f"{p.concurrent:,} concurrent calls, {p.rate:,.0f} calls/s, {p.cores_per_node}-core nodes:",
            f"  connection shards {p.shards}, CallActors {p.call_actors}",
            f"  CPU busy {p.busy_cores:.2f} cores -> provision {p.cores} cores on {p.nodes} node(s)",
            f"  memory {p.memory_gib:.2f} GiB (PSS)",
            f"  one of each carries: {ceilings}",
            f"  first bottleneck: {p.first_bottleneck}; the router at {p.router_load:.0%} of a core",
            *(f"  {n}" for n in p.notes),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: the plan for ``--concurrent`` calls and ``--rate`` calls/s."""
    parser = argparse.ArgumentParser(
        prog="python -m relay_actors.scale_model",
        description="How many shards, CallActors, cores and GiB an app on Ray needs.",
    )
    parser.add_argument("--concurrent", type=int, required=True, help="calls held at once")
    parser.add_argument("--rate", type=float, required=True, help="new calls per second")
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--calls-per-actor", type=int, default=Costs.calls_per_actor)
    parser.add_argument("--frames-per-call", type=float, default=Costs.frames_per_call)
    parser.add_argument("--table", action="store_true", help="also print the docs' table")
    args = parser.parse_args(argv)
    try:
        costs = replace(Costs(), calls_per_actor=args.calls_per_actor, frames_per_call=args.frames_per_call)
        print(describe(plan(args.concurrent, args.rate, args.cores_per_node, costs)))
        capacity = node_capacity(args.concurrent, args.cores_per_node, costs)
        print(
            f"  one {args.cores_per_node}-core node carries up to ~{capacity:,.0f} calls/s"
            " with these calls held"
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.table:
        print()
        print(
            table(
                [plan(n, m, args.cores_per_node, costs) for n in (10_000, 100_000) for m in (1_000, 10_000)]
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
