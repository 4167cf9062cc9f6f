"""Multi-node cases on a 3-node ``ray.cluster_utils.Cluster`` (head + 2 workers, all on
127.0.0.1). Not collected by the main run (a Cluster cannot share a process with the
session's local Ray): ``test_ray_multinode.py`` runs this file in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import ray_helpers as helpers
from ray.cluster_utils import Cluster
from ray_helpers import eventually, relay_actor_names

from relay_actors.ray_runtime.actor_messages import NAMESPACE

_cluster: Cluster | None = None


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """Overrides the conftest's local Ray: a 3-node cluster for this module."""
    global _cluster
    assert not ray.is_initialized()
    tmp = tempfile.mkdtemp(prefix="relay-cluster-")
    os.environ["RAY_TMPDIR"] = tmp  # the nodes' files go to <tmp>/ray
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    cluster: Cluster | None = None
    try:
        # The head carries the control plane (router, connection actor) for certain; soft
        # affinity alone let it spill onto a worker now and then.
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {"relay_control": 1}},
        )
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        logs = bool(os.environ.get("RELAY_TEST_RAY_LOGS"))
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=logs)
        _cluster = cluster
        yield tmp
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _node_ips() -> set[str]:
    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


async def _started(rec: Any, call_ids: list[str]) -> Any:
    dump = await rec.dump.remote()
    return dump if all(cid in dump["started"] for cid in call_ids) else None


async def test_calls_land_on_call_actors_on_distinct_nodes(make_client, emulator, recorder) -> None:
    assert _node_ips() == {"127.0.0.1"}, "every node on loopback"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, plays=1),
        ray_options={"min_call_actors": 3, "max_call_actors": 3},
    )
    actors = (await relay.ray_stats())["call_actors"]
    assert len({a["node_id"] for a in actors}) == 3, "SPREAD puts one CallActor on each node"
    call_ids = emulator.core.inject_calls("office", 9)
    dump = await eventually(lambda: _started(rec, call_ids), 20, what="9 calls handled")
    nodes = [dump["started"][cid][0]["node"] for cid in call_ids]
    assert len(set(nodes)) == 3 and all(nodes.count(n) == 3 for n in set(nodes))
    await eventually(lambda: _no_live(emulator), 15, what="calls ended")


async def _no_live(emulator: Any) -> bool:
    return not helpers.live_calls(emulator)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from test_ray_tracing import exporting

    yield from exporting(monkeypatch)


async def test_traces_across_nodes(make_client, emulator, recorder, receiver) -> None:
    """Tracing on a 3-node cluster: each call of a burst is one trace, its root and commands
    from a CallActor on its node, its admission from the connection actor, on that actor's node."""
    from test_ray_tracing import call_trace, check_ray_call, traced

    rec_name, _ = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, plays=1),
        ray_options={"min_call_actors": 3, "max_call_actors": 3},
    )
    call_ids = emulator.core.inject_calls("office", 9)

    await eventually(lambda: traced(receiver, call_ids), 60, what="every call's trace exported")
    # Where the connection actor runs (kept on the driver's node when it can: soft affinity).
    (shard,) = (await relay.ray_stats())["connections"]
    nodes = set()
    for cid in call_ids:
        root, spans = call_trace(receiver, cid)
        check_ray_call(root, spans, cid)
        nodes.add(root.resource["ray.node_id"])
        admission = next(s for s in spans if s.name == "relay.admission")
        assert admission.resource["relay.role"] == "connection"
        assert admission.resource["ray.node_id"] == shard["node_id"]  # made where the shard runs
    assert len(nodes) == 3, "the calls' roots were made on the three nodes"
    await eventually(lambda: _no_live(emulator), 15, what="calls ended")
    await relay.disconnect()


async def test_worker_node_removal(make_client, emulator, recorder) -> None:
    rec_name, rec = recorder
    relay = await make_client(
        on_call=helpers.recording_handler(rec_name, stay=True, hangup=False),
        ray_options={"min_call_actors": 3, "max_call_actors": 3, "control_resource": "relay_control"},
    )
    stats = await relay.ray_stats()
    control_nodes = {stats["router"]["node_id"], *(s["node_id"] for s in stats["connections"])}
    control_nodes.add(ray.get_runtime_context().get_node_id())
    assert _cluster is not None
    workers = {node.node_id: node for node in _cluster.worker_nodes}
    victims = [
        a for a in stats["call_actors"] if a["node_id"] in workers and a["node_id"] not in control_nodes
    ]
    assert victims, f"no worker node hosts only a CallActor: {stats}"
    victim = victims[0]
    call_ids = emulator.core.inject_calls("office", 9)
    dump = await eventually(lambda: _started(rec, call_ids), 20, what="9 calls handled")
    await eventually(lambda: _answered(emulator, 9), 10, what="9 answered")
    on_victim = [cid for cid in call_ids if dump["started"][cid][0]["node"] == victim["node_id"]]
    assert on_victim
    _cluster.remove_node(workers[victim["node_id"]])
    removed = time.monotonic()

    async def victims_ended() -> bool:
        calls = {c["call_id"]: c for c in emulator.core.list_calls()}
        return all(calls[cid]["state"] == "ended" for cid in on_victim)

    await eventually(victims_ended, 30, what="the removed node's calls hung up")
    print(f"\n[timing] worker node removed -> its calls hung up: {time.monotonic() - removed:.2f}s")
    calls = {c["call_id"]: c for c in emulator.core.list_calls()}
    assert all(calls[cid]["end_reason"] == "error" for cid in on_victim)
    others = [cid for cid in call_ids if cid not in on_victim]
    assert all(calls[cid]["state"] == "answered" for cid in others)

    async def agree() -> Any:
        st = await relay.ray_stats()
        live = len(helpers.live_calls(emulator))
        ok = st["router"]["calls"] == live == sum(s["active_calls"] for s in st["connections"])
        return st if ok and len(st["call_actors"]) == 3 else None

    st = await eventually(agree, 20, what="counts agree, pool back to 3")
    assert st["connections"][0]["calls_lost_actor"] == len(on_victim)
    assert victim["node_id"] not in {a["node_id"] for a in st["call_actors"]}
    fresh = emulator.core.inject_calls("office", 4)
    await eventually(lambda: _started(rec, fresh), 20, what="new calls after the node removal")
    for call in helpers.live_calls(emulator):
        emulator.core.hangup(call["call_id"])
    await eventually(lambda: _all_done(rec, others + fresh), 15, what="handlers finished")
    await relay.disconnect()
    assert relay_actor_names() == []


async def _answered(emulator: Any, count: int) -> bool:
    return helpers.answered_calls(emulator) >= count


async def _all_done(rec: Any, call_ids: list[str]) -> Any:
    dump = await rec.dump.remote()
    return all(cid in dump["done"] for cid in call_ids)
