"""Check the scale model (``relay_actors.scale_model``) against a real ``ray.cluster_utils.Cluster``.

    python benchmarks/check_scale_model.py [--nodes 3] [--shards 2] [--call-actors 3]
                                           [--rates 20,50] [--seconds 60] [--held 1500]

Starts a cluster of ``--nodes`` nodes on 127.0.0.1 (its own temp dir), the emulator, and the
app in this process (the driver) with ``--shards`` connection actors and ``--call-actors``
CallActors spread over the nodes; then measures, from each process's own CPU time and PSS
(``/proc``, through psutil; the emulator's processes left out):

1. **idle** (``--idle`` s): every process's fixed cost, CPU and PSS;
2. **held** (``--held`` answered calls held at once): PSS per held call in the CallActors
   and the connection actors (first: after a busy phase, the memory its calls freed would
   take them and hide their cost);
3. **steady** (each of ``--rates`` calls/s for ``--seconds``, the benchmark's call: answer,
   play TTS, wait for it, hang up): CPU of each kind of process; the line through CPU against
   calls/s (idle and the rates) gives the cost per call (its slope) and the fixed cost;

It prints what it measured next to what the model predicts for the same layout and load
(busy cores in each phase, PSS idle and with the calls held) and the ratio, then the
costs as measured (the ``Costs`` of this run: ``--nodes 1`` is how the model's defaults
were measured) and the model's plan for 16-core nodes. Keep the load modest on a small
shared machine: every node's daemons and every actor run on its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
HEAD = ("gcs_server", "head", "driver")
#: What only the head runs besides the GCS (in the process's command line): the dashboard's
#: head process and the autoscaler's monitor. Every node runs a raylet, its agents, a log
#: monitor and idle workers.
HEAD_ONLY = ("dashboard/dashboard.py", "autoscaler/_private/monitor.py")
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
    if label in (*ACTORS, "gcs_server"):
        return label
    try:
        command = " ".join(p.cmdline()[:3])
    except psutil.Error:
        return "node"
    return "head" if any(path in command for path in HEAD_ONLY) else "node"


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
        # Held calls first: after a busy phase, the memory its calls freed would take them.
        body = {"context": "held", "count": args.held, "rate": 200, "hangup_after": 3600}
        http("POST", f"{emu.control_url}/calls", body)
        await wait_for("calls answered", lambda: answered(emu) >= args.held, args.held / 50 + 60)
        await asyncio.sleep(3)  # the last answers' results reach the handlers
        out["held"] = (s1, sample(emu.pid))
        calls = http("GET", f"{emu.control_url}/calls?state=answered")["calls"]
        for c in calls:
            await asyncio.to_thread(http, "POST", f"{emu.control_url}/calls/{c['call_id']}/hangup", {})
        await wait_for("held calls ended", lambda: answered(emu) == 0, 60)
        # Their ends' work (events, slots, the handlers' returns) is not the steady phases'.
        await asyncio.sleep(args.settle)
        prev = sample(emu.pid)
        out["phases"] = [(s0, s1, 0)]
        for rate in args.rates:
            base = ended(emu)
            total = int(rate * args.seconds)
            body = {"context": "steady", "count": total, "rate": rate}
            http("POST", f"{emu.control_url}/calls", body)
            await wait_for(
                "steady calls ended", lambda b=base, n=total: ended(emu) - b >= n, args.seconds * 3 + 60
            )
            now = sample(emu.pid)
            out["phases"].append((prev, now, total))
            prev = now
    finally:
        await client.disconnect()
    return out


def slope_intercept(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through the points: (slope, intercept)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def phase_points(m: dict[str, Any]) -> list[tuple[float, Counter[str]]]:
    """Each phase (idle, then each rate) as (calls/s, CPU cores per kind)."""
    points = []
    for a, b, calls in m["phases"]:
        seconds = b["t"] - a["t"]
        points.append((calls / seconds, Counter({k: v / seconds for k, v in cpu_spent(a, b).items()})))
    return points


def costs_of(m: dict[str, Any], nodes: int, frames_per_call: float) -> Costs:
    """The costs this run measured, in the model's terms: per kind, the line through CPU
    against calls/s over the phases (its slope is the cost of one more call, its intercept
    the fixed cost: the idle phase alone would overstate it, as timers that fire when a
    process is idle do not when it is busy)."""
    points = phase_points(m)

    def line(kinds: tuple[str, ...]) -> tuple[float, float]:
        return slope_intercept([r for r, _ in points], [sum(c[k] for k in kinds) for _, c in points])

    count = m["phases"][0][1]["count"]
    pss = m["phases"][0][1]["pss"]
    n_actors = sum(count[k] for k in ACTORS)
    actors_fixed = line(ACTORS)[1]
    ray_per_call = line((*HEAD, "node"))[0]
    head_fixed = line(HEAD)[1]
    node_fixed = line(("node",))[1]
    h0, h1 = m["held"]
    held = m["held_n"]
    return Costs(
        frames_per_call=frames_per_call,
        connection_us_per_call=max(0.0, line(("ConnectionActor",))[0]) * 1e6,
        router_us_per_call=max(0.0, line(("Router",))[0]) * 1e6,
        call_actor_us_per_call=max(0.0, line(("CallActor",))[0]) * 1e6,
        ray_us_per_call=max(0.0, ray_per_call) * 1e6,
        idle_ms_per_s_per_actor=max(0.0, 1000 * actors_fixed / n_actors),
        idle_ms_per_s_per_node=max(0.0, 1000 * node_fixed / nodes),
        head_idle_ms_per_s=max(0.0, 1000 * head_fixed),
        actor_pss_mib=sum(pss[k] for k in ACTORS) / n_actors,
        node_pss_mib=pss["node"] / nodes,
        head_pss_mib=sum(pss[k] for k in HEAD),
        call_actor_kib_per_call=max(0.0, h1["pss"]["CallActor"] - h0["pss"]["CallActor"]) * 1024 / held,
        connection_kib_per_call=max(0.0, h1["pss"]["ConnectionActor"] - h0["pss"]["ConnectionActor"])
        * 1024
        / held,
    )


def start_cluster(nodes: int, emulator_pid: int) -> Any:
    """A ``Cluster`` of ``nodes`` nodes. On a loaded machine a node can miss Ray's own 30 s
    wait for its raylet: then what started is killed and the whole cluster tried again."""
    from ray.cluster_utils import Cluster

    for attempt in range(1, 4):
        cluster: Cluster | None = None
        try:
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {"relay_control": 1}},
            )
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
            return cluster
        except Exception as exc:
            print(f"cluster start, attempt {attempt}: {exc}", file=sys.stderr)
            for p in processes(emulator_pid):
                if p.pid != os.getpid():
                    with contextlib.suppress(psutil.Error):
                        p.kill()
            time.sleep(5)
    raise RuntimeError("the cluster did not start in 3 attempts (the machine is too loaded?)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--call-actors", type=int, default=3)
    parser.add_argument(
        "--rates", default="20,50", help="calls/s of the steady phases, one after the other (comma-separated)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each steady phase")
    parser.add_argument("--held", type=int, default=1500, help="calls held at once in the held phase")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle phase")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after the held calls end")
    parser.add_argument(
        "--frames-per-call", type=float, default=Costs.frames_per_call, help="as bench_soak.py measures"
    )
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    tmp = tempfile.mkdtemp(prefix="relay-scale-")
    os.environ.update(RAY_TMPDIR=tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    cluster: Any = None
    try:
        with EmulatorProcess(EMULATOR_ARGS, cpu=0, ready_timeout=120) as emu:
            os.environ.update(runner_env(emu))
            http("POST", f"{emu.control_url}/config", {"journal_limit": 1000, "ring_timeout": 600})
            t0 = time.monotonic()
            cluster = start_cluster(args.nodes, emu.pid)
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
    idle = m["phases"][0][1]
    h0, h1 = m["held"]
    layout = (args.shards, args.call_actors, args.nodes)
    points = phase_points(m)
    print(
        f"\n{args.nodes} nodes, {args.shards} shards, {args.call_actors} CallActors"
        f" (on {m['call_actor_nodes']} nodes); {args.idle:g} s idle, then"
        f" {', '.join(f'{r:g}' for r in args.rates)} calls/s for {args.seconds:g} s each,"
        f" then {args.held} held (first)"
    )
    counts = ", ".join(f"{k} {n}" for k, n in sorted(idle["count"].items()))
    print(f"processes: {counts}")
    header = f"{'figure':<34}{'predicted':>11}{'measured':>11}{'ratio':>8}  within {WITHIN:.0%}"
    print(header)
    print("-" * len(header))
    rows = [
        (f"busy cores at {rate:.1f} calls/s", predict_usage(rate, 0, *layout)[0], sum(c.values()))
        for rate, c in points
    ]
    rows.append(("PSS MiB, idle", predict_usage(0, 0, *layout)[1], sum(idle["pss"].values())))
    rows.append(
        (f"PSS MiB, {args.held} calls held", predict_usage(0, args.held, *layout)[1], sum(h1["pss"].values()))
    )
    for name, p, got in rows:
        ok = abs(got - p) <= WITHIN * got
        print(f"{name:<34}{p:>11.2f}{got:>11.2f}{p / got:>8.2f}  {'yes' if ok else 'NO'}")
    for rate, c in points:
        per_kind = ", ".join(f"{k} {1000 * v:.1f}" for k, v in c.most_common())
        print(f"CPU ms/s by kind at {rate:.1f} calls/s: {per_kind}")
    held = ", ".join(
        f"{k} {(h1['pss'][k] - h0['pss'][k]) * 1024 / args.held:.1f}" for k in (*ACTORS, "node", *HEAD)
    )
    print(f"PSS KiB per held call by kind: {held}")
    measured = costs_of(m, args.nodes, args.frames_per_call)
    print("\nthe costs this run measured (the model's Costs):")
    for name, value in measured.__dict__.items():
        default = getattr(Costs(), name)
        print(f"  {name} = {value:.4g}   (model: {default:.4g})")
    top = points[-1][0]
    print("\nthe model for a 16-core node, at what this run carried and at 10x:")
    for n, r in ((args.held, top), (10 * args.held, 10 * top)):
        print(describe(plan(n, r, 16)))


if __name__ == "__main__":
    sys.exit(main())
