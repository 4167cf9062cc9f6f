"""The router's pool decisions (:mod:`relay_actors.ray_runtime.pool_core`), one by one, no Ray."""

from __future__ import annotations

import pytest

from relay_actors.ray_runtime.pool_core import (
    ActorHealth,
    ActorLost,
    CallMoved,
    CallPlaced,
    CallReleased,
    CallsHeld,
    PoolCore,
    RetireStep,
    Spawn,
)


def core(shards: int = 2, min_actors: int = 2, max_actors: int = 4, capacity: int = 10) -> PoolCore:
    pool = PoolCore(
        shards=shards, min_actors=min_actors, max_actors=max_actors, capacity=capacity, handlers=b"gen0"
    )
    pool.set_nodes(["n1", "n2"])
    return pool


def up(pool: PoolCore, idx: int, calls: int = 0, incarnation: str = "a") -> ActorLost | None:
    return pool.health(idx, ActorHealth(incarnation, calls, pool.actors[idx].node or "n1"))


def test_fill_creates_min_actors_spread_over_the_nodes() -> None:
    pool = core()
    spawns = pool.fill()
    assert spawns == [Spawn(0, 0, "n1"), Spawn(1, 0, "n2")]
    assert pool.fill() == []  # full: nothing more
    assert pool.view() == [0, 1]


def test_a_pinned_pool_leaves_the_node_to_ray() -> None:
    pool = PoolCore(shards=1, min_actors=1, max_actors=1, capacity=1, spread=False)
    pool.set_nodes(["n1"])
    assert pool.fill() == [Spawn(0, 0, None)]


def test_autoscale_grows_above_the_threshold_once_at_a_time_up_to_the_bound() -> None:
    pool = core(min_actors=1, max_actors=2)
    pool.fill()
    up(pool, 0, calls=8)  # 8 of 10: not above 80 %
    assert pool.autoscale() is None
    up(pool, 0, calls=9)
    assert pool.autoscale() == Spawn(1, 0, "n2")
    up(pool, 1, calls=10)
    up(pool, 0, calls=10)
    assert pool.autoscale() is None  # at max_actors
    pool.scaled()
    assert pool.autoscale() is None


def test_autoscale_waits_for_the_last_scale_up() -> None:
    pool = core(min_actors=1, max_actors=3)
    pool.fill()
    up(pool, 0, calls=10)
    assert pool.autoscale() is not None
    up(pool, 0, calls=10)
    up(pool, 1, calls=10)
    assert pool.autoscale() is None  # the first is still being told to the shards
    pool.scaled()
    assert pool.autoscale() == Spawn(2, 0, "n1")


def test_want_capacity_respects_max_actors() -> None:
    pool = core(min_actors=1, max_actors=2)
    pool.fill()
    assert pool.want_capacity() is not None
    up(pool, 1)
    assert pool.want_capacity() is None


def test_want_capacity_adds_one_at_a_time_each_once_it_has_answered() -> None:
    """A stall makes every waiting offer of every shard ask: one CallActor at a time."""
    pool = core(min_actors=1, max_actors=4)
    pool.fill()
    up(pool, 0)
    assert pool.want_capacity() == Spawn(1, 0, "n2")
    assert pool.want_capacity() is None  # CallActor 1 is still starting
    up(pool, 1)
    assert pool.want_capacity() == Spawn(2, 0, "n1")


def test_a_new_incarnation_is_a_loss_with_the_calls_it_had() -> None:
    pool = core()
    pool.fill()
    assert up(pool, 0) is None  # the first answer is no loss
    pool.report(0, [CallPlaced("c1", 0), CallPlaced("c2", 1)])
    assert up(pool, 0) is None  # same incarnation
    assert pool.health(0, None) is None  # no answer: nothing decided
    assert up(pool, 0, incarnation="b") == ActorLost(0, "b", ("c1",), "a")
    assert pool.calls == {"c2": 1}
    assert pool.counters["call_actor_restarts"] == 1


def test_health_records_load_and_node() -> None:
    pool = core()
    pool.fill()
    pool.health(0, ActorHealth("a", 3, "n9"))
    assert pool.actors[0].load == 3 and pool.actors[0].node == "n9"
    assert pool.loads() == {0: 3, 1: 0}


def test_an_upgrade_shows_nothing_until_its_actors_are_up() -> None:
    pool = core()
    pool.fill()
    version = pool.version
    spawns = pool.begin_upgrade(b"gen1", {"log_job": "j2"})
    assert [(s.index, s.generation) for s in spawns] == [(2, 1), (3, 1)]
    assert pool.view() == [0, 1] and pool.version == version and pool.generation == 0
    with pytest.raises(RuntimeError):
        pool.begin_upgrade(b"x", {})
    retiring = pool.upgrade_up({2: ActorHealth("x", 0, "n1"), 3: ActorHealth("y", 0, "n2")}, 100.0, 30.0)
    assert retiring == [0, 1]
    assert pool.generation == 1 and pool.handlers == b"gen1"
    assert pool.view(current_only=True) == [2, 3]
    assert pool.retiring == {0: 130.0, 1: 130.0}
    assert pool.version > version
    info = pool.generations_info()
    assert info == {"generation": 1, "actors": {0: 0, 1: 0, 2: 1, 3: 1}, "retiring": [0, 1], "log_job": "j2"}
    snap = pool.snapshot()
    assert (
        snap.generation == 1 and snap.actors == ((0, 0), (1, 0), (2, 1), (3, 1)) and snap.retiring == (0, 1)
    )
    assert dict(snap.nodes)[2] == "n1" and dict(snap.nodes)[3] == "n2" and snap.log_job == "j2"


def test_a_snapshot_is_newer_by_version_within_a_router_and_by_epoch_across_restarts() -> None:
    pool = core()
    pool.epoch = 3
    first = pool.snapshot()
    assert first.newer_than(None) and not first.newer_than(first)
    pool.fill()
    grown = pool.snapshot()
    assert grown.newer_than(first) and not first.newer_than(grown)
    version = pool.version
    pool.health(0, ActorHealth("a", 0, "n9"))  # its node learned: the snapshot shows it
    assert pool.version > version and dict(pool.snapshot().nodes)[0] == "n9"
    version = pool.version
    pool.health(0, ActorHealth("a", 2, "n9"))  # only the load changed: the same snapshot
    assert pool.version == version
    # A restarted router starts counting again, under a higher epoch: still newer.
    restarted = core()
    restarted.epoch = 4
    assert restarted.snapshot().version < grown.version and restarted.snapshot().newer_than(grown)


def test_a_failed_upgrade_discards_its_actors_and_never_reuses_their_indices() -> None:
    pool = core()
    pool.fill()
    pool.begin_upgrade(b"gen1", {})
    assert pool.upgrade_failed() == [2, 3]
    assert pool.generation == 0 and pool.handlers == b"gen0" and pool.view() == [0, 1]
    assert pool.retired == {2, 3} and not pool.retiring
    assert pool.free_index() == 4
    assert pool.counters["upgrades_failed"] == 1


def test_an_upgrade_sizes_the_new_generation_like_the_current_one() -> None:
    pool = core(min_actors=1, max_actors=4)
    pool.fill()
    assert pool.want_capacity() == Spawn(1, 0, "n2")
    up(pool, 1)
    assert pool.want_capacity() == Spawn(2, 0, "n1")
    assert len(pool.begin_upgrade(b"g", {})) == 3


def retiring_pool() -> PoolCore:
    pool = core()
    pool.fill()
    pool.begin_upgrade(b"gen1", {})
    pool.upgrade_up({}, now=0.0, drain_timeout=10.0)
    return pool


def test_retirement_waits_while_the_actor_or_any_shard_holds_something() -> None:
    pool = retiring_pool()
    assert pool.retire_step(0, True, {0: 0, 1: 0}, 1.0) is RetireStep.WAIT  # the actor is busy
    assert pool.retire_step(0, None, {0: 0, 1: 0}, 1.0) is RetireStep.WAIT  # could not ask it
    assert pool.retire_step(0, False, {0: 0, 1: 2}, 1.0) is RetireStep.WAIT  # shard 1 has calls there
    assert pool.retire_step(0, False, {0: 0}, 1.0) is RetireStep.WAIT  # shard 1 did not answer
    assert pool.retire_step(0, False, {0: 0, 1: 0}, 1.0) is RetireStep.FORGET
    assert pool.retire_step(2, False, {0: 0, 1: 0}, 1.0) is RetireStep.WAIT  # not retiring


def test_past_the_deadline_a_busy_actor_is_hung_up_once() -> None:
    pool = retiring_pool()
    assert pool.retire_step(0, True, {0: 1, 1: 0}, 11.0) is RetireStep.HANG_UP
    assert pool.retire_step(0, True, {0: 1, 1: 0}, 12.0) is RetireStep.WAIT
    pool.hung_up_calls(1)
    assert pool.counters["calls_hung_up_drain_timeout"] == 1
    assert pool.retire_step(0, False, {0: 0, 1: 0}, 13.0) is RetireStep.FORGET


def test_an_actor_is_removed_only_once_every_shard_forgot_it() -> None:
    pool = retiring_pool()
    assert not pool.forgotten(0, {0: True})  # shard 1 did not answer
    assert not pool.forgotten(0, {0: True, 1: False})  # shard 1 has something with it after all
    assert 0 in pool.actors and 0 in pool.retiring
    assert pool.forgotten(0, {0: True, 1: True})
    assert 0 not in pool.actors and 0 not in pool.retiring and 0 in pool.retired
    assert pool.free_index() == 4  # never reused
    assert not pool.forgotten(0, {0: True, 1: True})  # (twice: nothing more)
    assert pool.counters["call_actors_retired"] == 1


def test_a_retiring_actor_that_is_gone_is_idle_but_still_forgotten_first() -> None:
    pool = retiring_pool()
    state = pool.persisted()
    rebuilt = core()
    rebuilt.restore(state)
    for idx in (1, 2, 3):  # CallActor 0 was not found
        assert rebuilt.adopt(idx)
    rebuilt.adopted()
    assert rebuilt.retire_step(0, None, {0: 0, 1: 0}, 1.0) is RetireStep.FORGET
    assert rebuilt.forgotten(0, {0: True, 1: True})


def test_the_call_table_follows_adds_moves_dels_and_syncs() -> None:
    pool = core()
    pool.fill()
    pool.report(0, [CallPlaced("a", 0), CallPlaced("b", 1), CallMoved("b", 0)])
    pool.report(1, [CallPlaced("c", 1)])
    assert pool.calls == {"a": 0, "b": 0, "c": 1}
    pool.report(0, [CallPlaced("a", 1)])
    assert pool.counters["double_assignments"] == 1
    pool.report(0, [CallReleased("a")])
    assert "a" not in pool.calls
    assert pool.calls_on(0, 0) == ["b"] and pool.calls_on(1, 1) == ["c"]
    # A restarted shard 0 holds only "d" now; "b" ended while it was down.
    pool.report(0, [CallsHeld((("d", 1),))])
    assert pool.calls == {"c": 1, "d": 1}


def test_a_sync_keeps_the_calls_on_actors_the_shard_could_not_ask() -> None:
    pool = core()
    pool.fill()
    pool.report(0, [CallPlaced("a", 0), CallPlaced("b", 1)])
    pool.report(0, [CallsHeld((), (1,))])
    assert pool.calls == {"b": 1}


def test_a_restart_carries_on_with_the_stored_generation_and_drops_an_unfinished_upgrade() -> None:
    pool = retiring_pool()
    pool.forgotten(0, {0: True, 1: True})
    pool.begin_upgrade(b"gen2", {"log_job": "j3"})  # the router dies while these come up
    state = pool.persisted()
    rebuilt = core()
    rebuilt.restore(state)
    assert rebuilt.generation == 1 and rebuilt.handlers == b"gen1"
    assert set(rebuilt.lookup_indices()) >= {1, 2, 3, 4, 5}
    kept = [idx for idx in (1, 2, 3, 4, 5) if rebuilt.adopt(idx)]
    rebuilt.adopted()
    assert kept == [1, 2, 3]  # 4 and 5 were the unfinished upgrade's: to kill
    assert rebuilt.retired == {0, 4, 5}
    assert rebuilt.generations_info()["actors"] == {1: 0, 2: 1, 3: 1}
    assert rebuilt.retiring == {1: 10.0}
    assert not rebuilt.adopt(0)  # a retired one found by name is killed too
    assert rebuilt.fill() == []  # the current generation has min_actors


def test_nothing_stored_is_the_first_generation() -> None:
    pool = core()
    pool.restore(None)
    assert pool.generation == 0 and pool.handlers == b"gen0"
    assert pool.persisted()["handlers"] is None  # the first generation's code is the router's argument


def test_a_restart_looks_up_every_stored_actor_beyond_max_actors() -> None:
    """(Found by the model: a restarted router that looked up only ``range(max_actors)``
    missed an upgrade's CallActor and created a second one under its name.)"""
    pool = core(min_actors=1, max_actors=1)
    pool.fill()
    pool.begin_upgrade(b"gen1", {})
    pool.upgrade_up({}, now=0.0, drain_timeout=10.0)
    rebuilt = core(min_actors=1, max_actors=1)
    rebuilt.restore(pool.persisted())
    assert rebuilt.lookup_indices() == [0, 1]
    assert rebuilt.adopt(0) and rebuilt.adopt(1)
    assert rebuilt.fill() == []


def test_a_shard_whose_start_failed_is_restarted_with_backoff_and_a_silent_one_is_left_alone() -> None:
    from relay_actors.ray_runtime.pool_core import ShardCheck, ShardRestarts

    watch = ShardRestarts(first_delay=2.0, max_delay=5.0)
    assert not watch.check(0, ShardCheck.NO_ANSWER, 0.0)  # starting, or stalled: not a failure
    assert not watch.check(0, ShardCheck.READY, 0.0)
    assert watch.check(0, ShardCheck.FAILED, 1.0)  # at once
    assert not watch.check(0, ShardCheck.FAILED, 2.0)  # (restarting: not again before 3.0)
    assert watch.check(0, ShardCheck.FAILED, 3.0)
    assert not watch.check(0, ShardCheck.FAILED, 6.0)  # then 4 s
    assert watch.check(0, ShardCheck.FAILED, 7.0)
    assert watch.check(0, ShardCheck.FAILED, 12.0)  # capped at 5 s
    assert watch.check(1, ShardCheck.FAILED, 12.0)  # each shard on its own
    assert not watch.check(0, ShardCheck.READY, 13.0)
    assert watch.check(0, ShardCheck.FAILED, 13.5)  # ready again: starts over
    assert watch.restarts == {0: 5, 1: 1}
