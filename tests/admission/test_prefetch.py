"""Shards with a large budget ask for slots before they run out, so offers at a burst
do not stop at every block for a round trip to the router; near the limit they ask
only for offers that wait, as before."""

from __future__ import annotations

from typing import Any

from relay_actors.ray_runtime.admission import (
    LEASE_BLOCK,
    MAX_LEASE_BLOCK,
    Admit,
    LeaseLedger,
    LeaseRequest,
    Reject,
    Send,
    ShardLeases,
    lease_block,
    prefetches,
)


def _sends(actions: list[Any]) -> list[LeaseRequest]:
    return [a.request for a in actions if isinstance(a, Send)]


def _answer_all(ledger: LeaseLedger, shard: ShardLeases[str], actions: list[Any]) -> list[Any]:
    """Deliver every request to the router and every reply back (no offers decided)."""
    done: list[Any] = [a for a in actions if not isinstance(a, Send)]
    pending = _sends(actions)
    while pending:
        reply = ledger.handle(pending.pop(0))
        assert reply is not None
        out = shard.on_reply(reply)
        done += [a for a in out if not isinstance(a, Send)]
        pending += _sends(out)
    return done


def test_only_full_blocks_prefetch_and_large_budgets_lease_larger_blocks() -> None:
    assert prefetches(lease_block(100_000, 2))
    assert not prefetches(lease_block(40, 2))  # 40 calls on 2 shards: blocks of 5
    assert lease_block(20, 2) == 2 and lease_block(1_000, 2) == LEASE_BLOCK
    assert lease_block(4_096, 1) == 256 and lease_block(100_000, 2) == MAX_LEASE_BLOCK
    for budget in (64, 1_000, 4_096, 10_000, 100_000, 1_000_000):
        for shards in (1, 2, 4):
            # Two blocks of spares per shard stay a small part of the budget.
            assert 2 * lease_block(budget, shards) <= max(2, budget // 2), (budget, shards)


def test_a_burst_never_waits_for_the_router_while_it_answers() -> None:
    ledger = LeaseLedger(100_000, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=LEASE_BLOCK, prefetch=True)
    _answer_all(ledger, shard, shard.start())
    assert shard.spare >= LEASE_BLOCK // 2  # asked ahead once synced
    asked_ahead = 0
    for n in range(1_000):
        actions = shard.offer(f"c{n}", f"c{n}")
        # Every offer is admitted at once: none waits for a grant.
        assert isinstance(actions[0], Admit) and not shard.waiting, (n, actions)
        if _sends(actions):
            asked_ahead += 1
            assert shard.spare * 2 < LEASE_BLOCK  # only once below half a block
            _answer_all(ledger, shard, actions)
    assert asked_ahead >= 1_000 // LEASE_BLOCK - 1
    assert 0 <= shard.spare <= 2 * LEASE_BLOCK
    assert ledger.grants()[0] == shard.granted


def test_without_prefetch_the_router_is_asked_only_for_waiting_offers() -> None:
    ledger = LeaseLedger(100_000, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=LEASE_BLOCK)
    _answer_all(ledger, shard, shard.start())
    assert shard.spare == 0
    actions = shard.offer("c0", "c0")
    assert not [a for a in actions if isinstance(a, Admit)] and shard.waiting


def test_near_the_limit_every_slot_is_used_and_a_short_grant_stops_asking_ahead() -> None:
    limit = LEASE_BLOCK * 5 // 2  # the prefetches run this budget out
    ledger = LeaseLedger(limit, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=LEASE_BLOCK, prefetch=True)
    _answer_all(ledger, shard, shard.start())
    for n in range(limit):
        _answer_all(ledger, shard, shard.offer(f"c{n}", f"c{n}"))
    # Every slot of the budget is used, none beyond it.
    assert len(shard.active) == limit and shard.granted == limit == ledger.grants()[0]
    # One more: it waits, the router grants nothing, it is rejected (over the limit).
    actions = _answer_all(ledger, shard, shard.offer("extra", "extra"))
    assert [type(a) for a in actions] == [Reject] and not shard.waiting
    # Short now: a call ending frees a slot here, but nothing is asked ahead of need.
    assert not _sends(shard.ended("c0"))
    assert not _sends(shard.ended("c1"))
    # An offer takes the freed slot at once.
    actions = shard.offer("next", "next")
    assert isinstance(actions[0], Admit)
