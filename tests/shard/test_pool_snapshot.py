"""A shard applies the router's pool snapshots only when newer: pushes that arrive late,
twice or out of order (and a start-up pull that crosses a push) change nothing."""

from __future__ import annotations

from relay_actors.ray_runtime.pool_core import PoolSnapshot
from relay_actors.ray_runtime.shard_core import ShardCore

from .conftest import Shell


def snapshot(
    epoch: int,
    version: int,
    actors: tuple[tuple[int, int], ...],
    generation: int = 0,
    capacity: int = 5,
) -> PoolSnapshot:
    return PoolSnapshot(epoch, version, generation, actors, (), (), capacity)


def test_a_newer_snapshot_adds_its_call_actors_and_generations() -> None:
    core = ShardCore(0, Shell())
    assert core.pool.apply(snapshot(1, 1, ((0, 0), (1, 0)))) == [0, 1]
    assert core.placement.capacity == {0: 5, 1: 5}
    assert core.placement.pick() is None  # no link up yet
    core.call_actor_linked(0)
    core.call_actor_linked(1)
    # An upgrade: generation 1's CallActors take the new calls, once linked (until then the
    # older ones do: a call placed there would wait for the new process to start).
    assert core.pool.apply(snapshot(1, 2, ((0, 0), (1, 0), (2, 1)), generation=1)) == [0, 1, 2]
    assert core.pool.snapshot is not None and core.pool.snapshot.generation == 1
    assert core.placement.pick() in (0, 1)
    core.call_actor_linked(2)
    assert core.placement.pick() == 2


def test_stale_duplicate_and_reordered_snapshots_are_ignored() -> None:
    core = ShardCore(0, Shell())
    newer = snapshot(1, 3, ((0, 0), (2, 1)), generation=1)
    older = snapshot(1, 2, ((0, 0), (1, 0)))
    assert core.pool.apply(newer) == [0, 2]
    assert core.pool.apply(newer) is None  # the same one again
    assert core.pool.apply(older) is None  # overtaken by the newer one
    assert core.pool.snapshot is newer and 1 not in core.placement.capacity
    assert core.counters["pool_snapshots_ignored"] == 2


def test_a_restarted_router_is_newer_by_its_epoch_although_its_count_starts_again() -> None:
    core = ShardCore(0, Shell())
    core.pool.apply(snapshot(1, 40, ((0, 0),)))
    assert core.pool.apply(snapshot(2, 1, ((0, 0), (1, 0)))) == [0, 1]
    assert core.pool.apply(snapshot(1, 41, ((0, 0), (5, 0)))) is None  # the old router, late
    assert 5 not in core.placement.capacity


def test_a_retired_call_actor_is_not_brought_back_by_a_snapshot() -> None:
    core = ShardCore(0, Shell())
    core.pool.apply(snapshot(1, 1, ((0, 0), (1, 1)), generation=1))
    assert core.pool.retire(0, unacknowledged=0)
    # A snapshot made before the router removed it still lists it.
    assert core.pool.apply(snapshot(1, 2, ((0, 0), (1, 1)), generation=1)) == [1]
    assert 0 not in core.placement.capacity
