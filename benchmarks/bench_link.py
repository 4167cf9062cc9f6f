"""What the actor link's delivery acknowledgements cost, over a real Unix socket.

    python benchmarks/bench_link.py [--calls 5000] [--items 12]

A connection actor sends a CallActor about a dozen items per call (offer, events,
results); since the data-plane rework, the CallActor acknowledges what it applied
(cumulatively, piggybacked on its own traffic when it has some, else a bare ACK
frame once none carried it within the link's ``ack_delay``, or after ``ack_every``
frames), and the connection actor acks a RELAY event only when that
acknowledgement covers it. This measures, in one process and one event loop, the
CPU of moving ``--calls`` calls' items through a LinkClient → LinkServer pair
with the CallActor's replies (a request per two items, as handlers make), and
how much of it is the acknowledgement: the same traffic where the receiver
answers with data frames only vs. where nothing answers (bare ACK frames only,
no request to piggyback on). Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from typing import Any

from relay_actors.ray_runtime import actor_link, link_tls
from relay_actors.ray_runtime.actor_link import LinkClient, LinkServer


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(calls: int, items: int, replies: bool) -> dict[str, Any]:
    key = bytes.fromhex(actor_link.new_secret())
    identity = link_tls.generate_identity()
    got = 0
    released = 0
    done = asyncio.Event()
    total = calls * items

    server: LinkServer

    def on_server_items(shard: int, batch: list[Any]) -> None:
        nonlocal got
        got += len(batch)
        if replies:
            for item in batch[::2]:
                server.send(shard, ["req", item[1], "calling.play", {"call_id": item[1]}])

    def on_released(idx: int, metas: list[Any]) -> None:
        nonlocal released
        released += len(metas)
        if released >= total:
            done.set()

    server = LinkServer(key, 0, on_server_items, tls=link_tls.server_context(identity))
    await server.start(None, tempfile.mkdtemp(prefix="rl-bench-"))

    async def endpoint(idx: int) -> tuple[dict[str, Any], bool]:
        return {"unix": server.unix_path}, True

    client = LinkClient(key, 0, lambda idx, batch: None, endpoint=endpoint, on_released=on_released)
    client.ensure(0)
    while not client.connected(0):  # noqa: ASYNC110 - a one-off start-up wait, outside the measurement
        await asyncio.sleep(0.01)
    params = {"call_id": "x" * 36, "node_id": "n" * 36, "call_state": "answered", "tag": None}
    start_cpu, start = cpu(), time.perf_counter()
    for call in range(calls):
        for i in range(items):
            client.send(0, ["event", f"call-{call}", "calling.call.state", params, 1.0, f"ev-{call}-{i}"], i)
        await asyncio.sleep(0)  # one loop iteration per call, as at steady load
    await asyncio.wait_for(done.wait(), 120)
    elapsed, used = time.perf_counter() - start, cpu() - start_cpu
    client_session = client.sessions[0]
    server_session = server.sessions[0]
    result = {
        "cpu_per_call_us": used / calls * 1e6,
        "wall_s": elapsed,
        "frames_c2s": client_session.frames_out,
        "frames_s2c": server_session.frames_out,
        "ack_frames": server_session.acks_out,
    }
    await client.aclose()
    await server.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--items", type=int, default=12)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    with_replies = asyncio.run(run(args.calls, args.items, True))
    acks_only = asyncio.run(run(args.calls, args.items, False))
    print(f"{args.calls} calls x {args.items} items, one loop iteration per call (pid {os.getpid()})\n")
    print("| receiver answers with | CPU per call (both ends) | frames → | frames ← | of which bare ACKs |")
    print("| --- | --- | --- | --- | --- |")
    rows = (("requests (acks piggybacked)", with_replies), ("nothing (bare ACKs only)", acks_only))
    for name, r in rows:
        cells = [f"{r['cpu_per_call_us']:.1f} µs", r["frames_c2s"], r["frames_s2c"], r["ack_frames"]]
        print(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
