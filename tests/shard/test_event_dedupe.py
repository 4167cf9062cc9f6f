"""EventDedupe: redelivered RELAY events are dropped per shard, within a bounded window."""

from __future__ import annotations

import pytest

from relay_actors.ray_runtime.event_dedupe import WINDOW, EventDedupe


def test_a_redelivered_event_is_recognised_once_applied() -> None:
    dedupe = EventDedupe()
    assert dedupe.seen_before(0, "e1") is False
    assert dedupe.seen_before(0, "e2") is False
    assert dedupe.seen_before(0, "e1") is True
    assert dedupe.seen_before(0, "e2") is True
    assert len(dedupe) == 2  # a duplicate is not remembered twice


def test_events_without_an_id_are_never_duplicates() -> None:
    dedupe = EventDedupe()
    for _ in range(3):
        assert dedupe.seen_before(0, None) is False
        assert dedupe.seen_before(0, "") is False
    assert len(dedupe) == 0


def test_the_window_is_bounded_per_shard_and_forgets_the_oldest() -> None:
    dedupe = EventDedupe(window=3)
    for i in range(5):
        dedupe.seen_before(0, f"e{i}")
    assert len(dedupe) == 3
    assert dedupe.seen_before(0, "e4") is True  # still kept
    assert dedupe.seen_before(0, "e0") is False  # forgotten: beyond what can be redelivered


def test_another_shards_traffic_does_not_push_a_restarted_shards_ids_out() -> None:
    # Shard 0 dies with events applied whose acks the server may not have had;
    # shard 1 keeps carrying calls meanwhile, far beyond the window.
    dedupe = EventDedupe(window=4)
    for i in range(4):
        dedupe.seen_before(0, f"a{i}")
    for i in range(100):
        dedupe.seen_before(1, f"b{i}")
    assert [dedupe.seen_before(0, f"a{i}") for i in range(4)] == [True] * 4


def test_an_in_order_redelivery_mixed_with_new_events_drops_every_duplicate() -> None:
    # A resume redelivers, in their first order, the last applied events and then those
    # never applied: each new one evicts the oldest, after the duplicates were checked.
    dedupe = EventDedupe(window=5)
    for i in range(20):
        dedupe.seen_before(0, f"e{i}")
    redelivered = [f"e{i}" for i in range(15, 20)] + [f"n{i}" for i in range(10)]
    dropped = [eid for eid in redelivered if dedupe.seen_before(0, eid)]
    assert dropped == [f"e{i}" for i in range(15, 20)]


def test_the_default_window_and_a_bad_one() -> None:
    assert EventDedupe().window == WINDOW
    with pytest.raises(ValueError, match="at least 1"):
        EventDedupe(window=0)
