"""One test per failure mode found in review of the old lease code (router.py's
``register_shard``/``acquire``/``release``/``_rebuild_grants`` and the connection
actor's ``_lease_more``/``_released``/``_hang_up_lost``/``_pick``). Each says what the
old code did; each would fail against that logic."""

from __future__ import annotations

from typing import Any

from relay_actors.ray_runtime.admission import (
    Admit,
    Duplicate,
    LeaseLedger,
    LeaseReply,
    LeaseRequest,
    Reject,
    Send,
    ShardLeases,
)
from relay_actors.ray_runtime.placement import Placement, RouteRebuild


def _sent(actions: list[Any]) -> LeaseRequest:
    sends = [a.request for a in actions if isinstance(a, Send)]
    assert len(sends) == 1, actions
    return sends[0]


def _synced(ledger: LeaseLedger, shard: ShardLeases[str]) -> None:
    """Run the shard's start-up handshake (sync, refused with the epoch, sync again)."""
    actions = shard.start()
    while actions:
        reply = ledger.handle(_sent(actions))
        assert reply is not None
        actions = [a for a in shard.on_reply(reply) if isinstance(a, Send)]
    assert shard.synced and shard.epoch == ledger.epoch


def _holding(ledger: LeaseLedger, shard: ShardLeases[str], calls: int) -> None:
    """``shard`` admits ``calls`` offers, leasing what it needs."""
    for n in range(calls):
        call_id = f"s{shard.shard}-c{n}"
        actions = shard.offer(call_id, call_id)
        while any(isinstance(a, Send) for a in actions):
            reply = ledger.handle(_sent(actions))
            assert reply is not None
            actions = shard.on_reply(reply)
        assert call_id in shard.active


def test_router_restart_shard_that_did_not_answer_is_not_free() -> None:
    # Old: after a router restart `_rebuild_grants` asked each shard for `lease_state`
    # with a 5 s timeout and on a timeout `continue`d: that shard's grant was simply
    # missing, `_free()` = budget - the others' grants, and nothing made the shard
    # register again. Shard 1 held 7 of 10 slots; shard 0 was then leased 7 more.
    old = LeaseLedger(10, 2, epoch=1)
    shard0, shard1 = ShardLeases[str](0, 1, block=1), ShardLeases[str](1, 1, block=1)
    _synced(old, shard0)
    _synced(old, shard1)
    _holding(old, shard1, 7)
    _holding(old, shard0, 3)

    new = LeaseLedger(10, 2, epoch=2)  # the router restarted
    _ask_and_sync(new, shard0)  # shard 1's answer timed out: unknown, not free
    assert new.unknown() == [1] and new.free() == 0
    acquire = _sent(shard0.offer("more", "more"))
    reply = new.handle(acquire)
    assert reply == LeaseReply("wait", 0, 1, acquire.seq, 2)  # nothing is provably free yet
    assert shard0.on_reply(reply) == [] and shard0.waiting  # the offer waits, not dropped

    # Asked again (it is retried until it answers), shard 1 reports its 7: none are free.
    _ask_and_sync(new, shard1)
    assert new.unknown() == [] and new.grants() == {0: 3, 1: 7} and new.free() == 0
    assert shard0.retry() == [Send(acquire)]
    reply = new.handle(acquire)
    assert reply is not None and reply.kind == "granted" and reply.count == 0
    assert shard0.on_reply(reply) == [Reject("more", "more")]


def _ask_and_sync(ledger: LeaseLedger, shard: ShardLeases[str]) -> None:
    reply = ledger.handle(_sent(shard.on_ask(ledger.epoch)))
    assert reply is not None and reply.kind == "synced"
    assert shard.on_reply(reply) == [] and shard.epoch == ledger.epoch


def test_failed_hangup_keeps_the_slot() -> None:
    # Old: `_hang_up_lost` called `_released_lost(cid)` (the slot and the router's record
    # freed) BEFORE `calling.end`; when that failed (timeout, connection lost) the call
    # stayed live on the server, uncounted, and its slot admitted a new offer.
    ledger = LeaseLedger(2, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=1)
    _synced(ledger, shard)
    _holding(ledger, shard, 2)  # the whole budget
    shard.hangup_failed("s0-c0")  # its CallActor was lost; the hang-up failed
    assert shard.unconfirmed == {"s0-c0"} and "s0-c0" in shard.active
    acquire = _sent(shard.offer("new", "new"))  # no slot here: it must ask the router
    reply = ledger.handle(acquire)
    assert reply is not None and reply.count == 0
    assert shard.on_reply(reply) == [Reject("new", "new")]
    # The retried hang-up worked (or the `ended` event came): now the slot is free.
    assert shard.ended("s0-c0") == [] and shard.unconfirmed == set()
    assert shard.offer("newer", "newer") == [Admit("newer", "newer")]


def test_unconfirmed_hangups_survive_a_shard_restart() -> None:
    # Old: a restarted shard counted only what the CallActors hold; a lost CallActor's
    # call whose hang-up failed is held by none, so it became invisible.
    shard = ShardLeases[str](0, 2, block=1, active={"held"}, unconfirmed={"hanging"})
    assert shard.active == {"held", "hanging"}
    assert _sent(shard.start()).active == 2


def _releasing(ledger: LeaseLedger, calls: int) -> tuple[ShardLeases[str], LeaseRequest]:
    """A shard that held ``calls`` calls, 4 of which ended: it gives spare slots back."""
    shard = ShardLeases[str](0, 1, block=1)
    _synced(ledger, shard)
    _holding(ledger, shard, calls)
    for n in range(4):
        shard.ended(f"s0-c{n}")
    release = shard.outstanding
    assert release is not None and release.kind == "release"
    return shard, release


def test_release_retransmitted_is_applied_once() -> None:
    # Old: `release(shard, count)` subtracted `count` each time it ran; `_router_call`
    # retries after ActorUnavailableError (which may or may not have run), so a
    # release that ran twice freed slots the shard still used.
    ledger = LeaseLedger(10, 1, epoch=1)
    shard, release = _releasing(ledger, calls=5)
    first = ledger.handle(release)
    again = ledger.handle(release)  # the retry, or a duplicate in the network
    assert first == again and ledger.grants() == {0: shard.granted}
    assert shard.on_reply(first) == [] and shard.on_reply(again) == []  # the second is stale
    assert ledger.free() == 10 - shard.granted


def test_release_from_before_a_router_restart_is_fenced() -> None:
    # Old: nothing ordered `release` with `_rebuild_grants`: a release the shard sent to
    # the old router, retried onto the new one after the rebuild had read the shard's
    # (already reduced) grant, was subtracted again, so the router believed the shard
    # held fewer slots than it used, and leased them to others.
    old = LeaseLedger(10, 1, epoch=1)
    shard, release = _releasing(old, calls=6)
    assert release.epoch == 1
    new = LeaseLedger(10, 1, epoch=2)  # the old router died before it ran
    _ask_and_sync(new, shard)
    assert new.grants() == {0: shard.granted}
    refused = new.handle(release)  # the retry lands on the new router
    assert refused is not None and refused.kind == "refused"
    assert new.grants() == {0: shard.granted} and shard.granted >= len(shard.active)
    assert shard.on_reply(refused) == []  # stale for the shard too


def test_acquire_retried_after_unavailable_leases_once() -> None:
    # Old: `_router_call("acquire", shard, want)` retried on RayActorError; if the first
    # call had run (its reply lost with the dying worker), the router leased `want`
    # twice and the shard counted only the second: the first block leaked for good.
    ledger = LeaseLedger(10, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=4)
    _synced(ledger, shard)
    acquire = _sent(shard.offer("c1", "c1"))
    lost_reply = ledger.handle(acquire)  # ran; the reply never came back
    assert shard.retry() == [Send(acquire)]  # the same request, same id
    reply = ledger.handle(acquire)
    assert reply == lost_reply and ledger.grants() == {0: 4}
    assert shard.on_reply(reply) == [Admit("c1", "c1")] and shard.granted == 4


def test_old_incarnation_requests_are_ignored() -> None:
    # A restarted shard's sync replaces its record; a late request of its earlier life
    # (a retry, a duplicate) must not change the new grant.
    ledger = LeaseLedger(10, 1, epoch=1)
    first = ShardLeases[str](0, 1, block=2)
    _synced(ledger, first)
    late = _sent(first.offer("c1", "c1"))
    second = ShardLeases[str](0, 2, block=2, active={"c0"})
    _synced(ledger, second)
    assert ledger.grants() == {0: 1}
    assert ledger.handle(late) is None and ledger.grants() == {0: 1}


def test_redelivered_offer_is_not_admitted_twice() -> None:
    ledger = LeaseLedger(10, 1, epoch=1)
    shard = ShardLeases[str](0, 1, block=2)
    _synced(ledger, shard)
    assert isinstance(_sent(shard.offer("c1", "a")), LeaseRequest)
    assert shard.offer("c1", "b") == [Duplicate("c1", "b")]  # waiting
    reply = ledger.handle(shard.outstanding)  # type: ignore[arg-type]
    assert reply is not None
    assert shard.on_reply(reply) == [Admit("c1", "a")]
    assert shard.offer("c1", "c") == [Duplicate("c1", "c")]  # admitted


def test_waiting_offers_are_bounded() -> None:
    shard = ShardLeases[str](0, 1, block=1, max_waiting=2)
    shard.start()
    shard.offer("a", "a")
    shard.offer("b", "b")
    assert shard.offer("c", "c") == [Reject("c", "c")]


# --- placement (was ConnectionActor._pick/_pick_any, mixed into the actor) -----------------


def test_placement_least_loaded_with_room() -> None:
    placement = Placement()
    for idx in range(3):
        placement.add(idx, 2)
    placement.placed_on(0)
    assert placement.pick() == 1
    placement.placed_on(1)
    assert placement.pick() == 2
    placement.placed_on(2)
    placement.placed_on(2)
    assert placement.pick() in (0, 1)
    assert placement.pick(exclude={0}) == 1
    placement.full(0)
    placement.full(1)
    assert placement.pick() is None


def test_placement_skips_unavailable_actors_until_each_reason_clears() -> None:
    placement = Placement()
    placement.add(0, 10)
    placement.add(1, 10)
    placement.placed_on(1)
    placement.set_unavailable(0, "lost")
    placement.set_unavailable(0, "slow")
    assert placement.pick() == 1 and placement.pick_any() == 1
    placement.set_available(0, "lost")
    assert placement.pick() == 1 and not placement.is_available(0)
    placement.set_available(0, "slow")
    assert placement.pick() == 0 and placement.is_available(0)


def test_placement_round_robin_over_live_actors() -> None:
    placement = Placement()
    for idx in range(3):
        placement.add(idx, 1)
    placement.set_unavailable(1, "draining")
    picks = [placement.pick_any() for _ in range(4)]
    assert sorted(picks[:2]) == [0, 2] and picks[2:] == picks[:2]
    placement.set_unavailable(0, "lost")
    placement.set_unavailable(2, "lost")
    assert placement.pick_any() is None


# --- a restarted shard that could not ask every CallActor (``owned()`` failed) -------------


def _restarted(ledger: LeaseLedger, known: set[str], unknown: set[int]) -> ShardLeases[str]:
    """Shard 0's next incarnation, which learned ``known`` and could not ask ``unknown``."""
    shard = ShardLeases[str](0, 2, block=1, active=set(known), unknown=set(unknown))
    _synced(ledger, shard)
    return shard


def test_shard_restart_calls_of_an_unasked_call_actor_stay_counted() -> None:
    # Old: `_rebuild` skipped a CallActor whose `owned()` failed or timed out (10 s): the
    # new incarnation synced with only the calls it knew (1 of 3), the router cut its
    # grant to 1, and 2 more offers were admitted: 5 live calls on a limit of 4.
    ledger = LeaseLedger(4, 1, epoch=1)
    old = ShardLeases[str](0, 1, block=1)
    _synced(ledger, old)
    _holding(ledger, old, 3)  # s0-c0 on CallActor 0; s0-c1, s0-c2 on CallActor 1
    shard = _restarted(ledger, {"s0-c0"}, unknown={1})
    assert ledger.grants() == {0: 3} and shard.granted == 3 and shard.held == 2 and shard.spare == 0
    actions = shard.offer("n1", "n1")
    reply = ledger.handle(_sent(actions))
    assert reply is not None and shard.on_reply(reply) == [Admit("n1", "n1")]  # the 4th slot
    reply = ledger.handle(_sent(shard.offer("n2", "n2")))
    assert reply is not None and shard.on_reply(reply) == [Reject("n2", "n2")]  # not a 5th
    # CallActor 1 answers at last: its calls are counted by id, nothing is held any more.
    assert shard.learned(1, ["s0-c1", "s0-c2"]) == []
    assert shard.held == 0 and shard.active == {"s0-c0", "s0-c1", "s0-c2", "n1"}
    assert shard.learned(1, ["s0-c1"]) == []  # a late second answer changes nothing
    assert shard.ended("s0-c1") == [] and shard.spare == 1


def test_inherited_grant_unknown_to_a_restarted_router_waits() -> None:
    # The router restarted too: it never heard of the earlier incarnation, so it cannot
    # say what that grant was. The shard stays unknown to it (reserving the budget)
    # rather than reporting a grant too small, until its CallActors have answered.
    old = LeaseLedger(4, 1, epoch=1)
    first = ShardLeases[str](0, 1, block=1)
    _synced(old, first)
    _holding(old, first, 3)
    ledger = LeaseLedger(4, 1, epoch=2)
    shard = ShardLeases[str](0, 2, block=1, active={"s0-c0"}, unknown={1})
    shard.epoch = 2
    sync = _sent(shard.start())
    assert sync.inherit
    reply = ledger.handle(sync)
    assert reply is not None and reply.kind == "wait" and ledger.unknown() == [0]
    assert shard.on_reply(reply) == [] and not shard.synced and ledger.free() == 0
    plain = _sent(shard.learned(1, ["s0-c1", "s0-c2"]))  # answered: report in full
    assert plain.kind == "sync" and not plain.inherit and plain.active == 3
    reply = ledger.handle(plain)
    assert reply is not None and shard.on_reply(reply) == []
    assert ledger.grants() == {0: 3} and shard.synced and shard.held == 0


def test_first_life_has_nothing_to_inherit() -> None:
    shard = ShardLeases[str](0, 1, block=1, unknown={1})
    assert shard.unknown == set() and not _sent(shard.start()).inherit


def test_route_rebuild_holds_events_until_the_call_actor_answers() -> None:
    # Old: an event for a call of a CallActor the restarted shard could not ask was
    # routed nowhere and acked as unroutable: the handler never saw it (an `ended`
    # never seen: a handler waiting forever, a slot never freed).
    rebuild = RouteRebuild[str]([1, 2], now=0.0, first_delay=0.5, max_delay=2.0, deadline=30.0)
    assert rebuild.due(0.0) == [] and rebuild.due(0.5) == [1, 2]
    assert rebuild.due(0.6) == []  # being asked
    rebuild.failed(1, 1.0)
    rebuild.failed(2, 1.0)
    assert rebuild.due(1.9) == [] and rebuild.due(2.0) == [1, 2]  # backoff: 1 s
    rebuild.failed(1, 2.0)
    rebuild.failed(1, 2.0)  # (twice: capped)
    assert rebuild.hold("a", "a1") and rebuild.hold("b", "b1") and rebuild.hold("a", "a2")
    assert rebuild.resolved(1, ["a"]) == [("a", "a1"), ("a", "a2")]  # in order
    assert rebuild.resolved(1, ["a"]) == []  # once
    assert rebuild.pending and rebuild.held == [("b", "b1")]
    # The last unknown answers without "b": it is no one's, and goes on as unroutable.
    assert rebuild.resolved(2, []) == [("b", "b1")]
    assert not rebuild.pending and not rebuild.hold("c", "c1")


def test_route_rebuild_is_bounded_and_gives_up_at_its_deadline() -> None:
    rebuild = RouteRebuild[str]([3], now=10.0, deadline=60.0, max_held=2)
    assert rebuild.hold("a", "a1") and rebuild.hold("a", "a2")
    assert not rebuild.hold("a", "a3") and rebuild.overflowed == 1  # full: unroutable now
    assert rebuild.expired(69.9) == []
    assert rebuild.expired(70.0) == [3] and rebuild.expired(80.0) == []  # given up once
    assert rebuild.due(80.0) == []  # and no longer asked
    assert rebuild.pending  # until resolved with its last known calls
    assert rebuild.resolved(3, ["a"]) == [("a", "a1"), ("a", "a2")]
