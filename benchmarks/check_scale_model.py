"""Check the scale model (``relay_actors.scale_model``) against a real ``ray.cluster_utils.Cluster``.

    python benchmarks/check_scale_model.py [--nodes 3] [--shards 2] [--call-actors 3]
                                           [--rate 40] [--seconds 60] [--held 1500]

Starts a cluster of ``--nodes`` nodes on 127.0.0.1 (its own temp dir), the emulator, and the
app in this process (the driver) with ``--shards`` connection actors and ``--call-actors``
CallActors spread over the nodes; then measures, from each process's own CPU time and PSS
(``/proc``, through psutil; the emulator's processes left out):

1. **idle** (``--idle`` s): every process's fixed cost, CPU and PSS;
2. **steady** (``--rate`` calls/s for ``--seconds``, the benchmark's call: answer, play TTS,
   wait for it, hang up): CPU per call of each kind of process, above its idle cost;
3. **held** (``--held`` answered calls held at once): PSS per held call in the CallActors
   and the connection actors.

It prints what it measured next to what the model predicts for the same layout and load
(busy cores in the steady phase, PSS idle and with the calls held) and the ratio, then the
costs as measured (the ``Costs`` of this run: ``--nodes 1`` is how the model's defaults
were measured) and the model's plan for 16-core nodes. Keep the load modest on a small
shared machine: every node's daemons and every actor run on its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import psutil

# A script beside this one (python puts the script's directory on the path).
from bench_clients import EMULATOR_ARGS, Tree, http, runner_env
from client_runner import inbound_flow

from relay_actors.emulator import EmulatorProcess
from relay_actors.scale_model import Costs, describe, plan, predict_usage

#: The model's kinds of process: the actors, and what each node and the head run besides.
ACTORS = ("ConnectionActor", "Router", "CallActor")
HEAD = ("gcs_server", "driver")
#: How close the prediction must come (the issue's bound).
WITHIN = 0.25


def processes(emulator_pid: int) -> list[psutil.Process]:
    """This process and its descendants (the cluster's), without the emulator's."""
    me = psutil.Process()
    skip = {emulator_pid}
    try:
        skip |= {p.pid for p in psutil.Process(emulator_pid).children(recursive=True)}
    except psutil.Error:
        pass
    return [p for p in [me, *me.children(recursive=True)] if p.pid not in skip]


def kind(p: psutil.Process) -> str:
    if p.pid == os.getpid():
        return "driver"
    label = Tree._label(p)
    return label if label in (*ACTORS, "gcs_server") else "node"  # raylet, agents, idle workers


def sample(emulator_pid: int) -> dict[str, Any]:
    """CPU seconds per pid (with its kind), PSS per kind (MiB), processes per kind."""
    cpu: dict[int, tuple[str, float]] = {}
    pss: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for p in processes(emulator_pid):
        try:
            k = kind(p)
            t = p.cpu_times()
            mem = p.memory_full_info().pss
        except psutil.Error:
            continue
        cpu[p.pid] = (k, t.user + t.system)
        pss[k] += mem / 2**20
        count[k] += 1
    return {"cpu": cpu, "pss": pss, "count": count, "t": time.monotonic()}


def cpu_spent(a: dict[str, Any], b: dict[str, Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    for pid, (k, t) in b["cpu"].items():
        out[k] += t - a["cpu"].get(pid, (k, 0.0))[1]
    return out


def ended(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["call_state_transitions"].get("ended", 0))


def answered(emu: EmulatorProcess) -> int:
    return int(http("GET", f"{emu.control_url}/stats")["calls"].get("answered", 0))


async def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.5)


async def on_call(call: Any) -> None:
    """``steady`` calls run the benchmark's flow; ``held`` calls are answered and held."""
    if call.context == "held":
        await call.answer()
        await call.wait_for_ended()
    else:
        await inbound_flow(call)


async def measure(args: argparse.Namespace, address: str, emu: EmulatorProcess) -> dict[str, Any]:
    from relay_actors import RelayClient
    from relay_actors.ray_runtime import RayOptions

    options = RayOptions(
        app="scalecheck",
        address=address,
        connections=args.shards,
        min_call_actors=args.call_actors,
        max_call_actors=args.call_actors,
        calls_per_actor=max(5000, args.held),
        call_actor_cpus=0.01,
        metrics_port=-1,  # no endpoint: another app on this machine may hold the default port
        init_kwargs={"log_to_driver": False},
    )
    client = RelayClient(
        contexts=["steady", "held"], max_active_calls=100_000, runtime="ray", ray_options=options
    )
    client.on_call(on_call)
    await client.connect()
    out: dict[str, Any] = {}
    try:
        stats = await client.ray_stats()
        out["call_actor_nodes"] = len({a["node_id"] for a in stats["call_actors"]})
        await asyncio.sleep(5)  # the actors' start-up work settles before the idle window
        s0 = sample(emu.pid)
        await asyncio.sleep(args.idle)
        s1 = sample(emu.pid)
        out["idle"] = (s0, s1)
        base = ended(emu)
        total = int(args.rate * args.seconds)
        http("POST", f"{emu.control_url}/calls", {"context": "steady", "count": total, "rate": args.rate})
        await wait_for("steady calls ended", lambda: ended(emu) - base >= total, args.seconds * 3 + 60)
        s2 = sample(emu.pid)
        out["steady"] = (s1, s2, total)
        body = {"context": "held", "count": args.held, "rate": 200, "hangup_after": 3600}
        http("POST", f"{emu.control_url}/calls", body)
        await wait_for("calls answered", lambda: answered(emu) >= args.held, args.held / 50 + 60)
        await asyncio.sleep(3)  # the last answers' results reach the handlers
        out["held"] = (s2, sample(emu.pid))
        calls = http("GET", f"{emu.control_url}/calls?state=answered")["calls"]
        for c in calls:
            await asyncio.to_thread(http, "POST", f"{emu.control_url}/calls/{c['call_id']}/hangup", {})
    finally:
        await client.disconnect()
    return out


def costs_of(m: dict[str, Any], nodes: int, frames_per_call: float) -> Costs:
    """The costs this run measured, in the model's terms."""
    i0, i1 = m["idle"]
    idle = cpu_spent(i0, i1)
    idle_s = i1["t"] - i0["t"]
    s1, s2, calls = m["steady"]
    load = cpu_spent(s1, s2)
    load_s = s2["t"] - s1["t"]

    def above_idle(kinds: tuple[str, ...]) -> float:
        """µs per call of these kinds, above what they spend idle."""
        spent = sum(load[k] - idle[k] * load_s / idle_s for k in kinds)
        return max(0.0, spent) * 1e6 / calls

    count = i1["count"]
    n_actors = sum(count[k] for k in ACTORS)
    h0, h1 = m["held"]
    return Costs(
        frames_per_call=frames_per_call,
        connection_us_per_call=above_idle(("ConnectionActor",)),
        router_us_per_call=above_idle(("Router",)),
        call_actor_us_per_call=above_idle(("CallActor",)),
        ray_us_per_call=above_idle(("gcs_server", "driver", "node")),
        idle_ms_per_s_per_actor=1000 * sum(idle[k] for k in ACTORS) / idle_s / n_actors,
        idle_ms_per_s_per_node=1000 * sum(idle[k] for k in ("gcs_server", "driver", "node")) / idle_s / nodes,
        actor_pss_mib=sum(i1["pss"][k] for k in ACTORS) / n_actors,
        node_pss_mib=i1["pss"]["node"] / nodes,
        head_pss_mib=sum(i1["pss"][k] for k in HEAD),
        call_actor_kib_per_call=max(0.0, h1["pss"]["CallActor"] - h0["pss"]["CallActor"])
        * 1024
        / m["held_n"],
        connection_kib_per_call=max(0.0, h1["pss"]["ConnectionActor"] - h0["pss"]["ConnectionActor"])
        * 1024
        / m["held_n"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--call-actors", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="calls/s in the steady phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase")
    parser.add_argument("--held", type=int, default=1500, help="calls held at once in the held phase")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle phase")
    parser.add_argument(
        "--frames-per-call", type=float, default=Costs.frames_per_call, help="as bench_soak.py measures"
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="relay-scale-")
    os.environ.update(RAY_TMPDIR=tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    from ray.cluster_utils import Cluster

    cluster: Cluster | None = None
    try:
        with EmulatorProcess(EMULATOR_ARGS, cpu=0) as emu:
            os.environ.update(runner_env(emu))
            http("POST", f"{emu.control_url}/config", {"journal_limit": 1000, "ring_timeout": 600})
            t0 = time.monotonic()
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {"relay_control": 1}},
            )
            for _ in range(args.nodes - 1):
                cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
            print(f"{args.nodes}-node cluster up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            from relay_actors.eventloop import run

            m = run(measure(args, cluster.address, emu))
    finally:
        import ray

        ray.shutdown()  # the driver leaves first: Cluster refuses to remove the node it is on
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    m["held_n"] = args.held
    report(args, m)
    return 0


def report(args: argparse.Namespace, m: dict[str, Any]) -> None:
    _, i1 = m["idle"]
    s1, s2, calls = m["steady"]
    h0, h1 = m["held"]
    load = cpu_spent(s1, s2)
    busy = sum(load.values()) / (s2["t"] - s1["t"])
    rate = calls / (s2["t"] - s1["t"])  # the rate the window really had (tail included)
    layout = (args.shards, args.call_actors, args.nodes)
    predicted_busy, predicted_idle_mib = predict_usage(rate, 0, *layout)
    _, predicted_held_mib = predict_usage(0, args.held, *layout)
    measured_idle_mib = sum(i1["pss"].values())
    measured_held_mib = sum(h1["pss"].values())
    print(
        f"\n{args.nodes} nodes, {args.shards} shards, {args.call_actors} CallActors"
        f" (on {m['call_actor_nodes']} nodes); steady {calls} calls over {s2['t'] - s1['t']:.0f} s"
        f" ({rate:.1f}/s), then {args.held} held"
    )
    counts = ", ".join(f"{k} {n}" for k, n in sorted(i1["count"].items()))
    print(f"processes: {counts}")
    header = f"{'figure':<34}{'predicted':>11}{'measured':>11}{'ratio':>8}  within {WITHIN:.0%}"
    print(header)
    print("-" * len(header))
    for name, p, got in (
        ("busy cores, steady", predicted_busy, busy),
        ("PSS MiB, idle", predicted_idle_mib, measured_idle_mib),
        (f"PSS MiB, {args.held} calls held", predicted_held_mib, measured_held_mib),
    ):
        ok = abs(got - p) <= WITHIN * got
        print(f"{name:<34}{p:>11.2f}{got:>11.2f}{p / got:>8.2f}  {'yes' if ok else 'NO'}")
    per_kind = ", ".join(f"{k} {1000 * v / calls:.3f}" for k, v in load.most_common())
    print(f"CPU ms per call by kind (steady, idle cost included): {per_kind}")
    held = ", ".join(
        f"{k} {(h1['pss'][k] - h0['pss'][k]) * 1024 / args.held:.1f}" for k in (*ACTORS, "node", *HEAD)
    )
    print(f"PSS KiB per held call by kind: {held}")
    measured = costs_of(m, args.nodes, args.frames_per_call)
    print("\nthe costs this run measured (the model's Costs):")
    for name, value in measured.__dict__.items():
        default = getattr(Costs(), name)
        print(f"  {name} = {value:.4g}   (model: {default:.4g})")
    print("\nthe model for a 16-core node, at what this run carried and at 10x:")
    for n, r in ((args.held, rate), (10 * args.held, 10 * rate)):
        print(describe(plan(n, r, 16)))


if __name__ == "__main__":
    sys.exit(main())
