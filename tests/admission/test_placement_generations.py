"""The placement's generation rule (sans-IO): new calls and messages go to the newest code
generation with an available CallActor; older generations drain; a retired actor is forgotten."""

from __future__ import annotations

from relay_actors.ray_runtime.placement import Placement


def _two_generations() -> Placement:
    placement = Placement()
    placement.add(0, 10)
    placement.add(1, 10)
    for _ in range(3):
        placement.placed_on(0)
    placement.add(2, 10, generation=1)
    placement.add(3, 10, generation=1)
    return placement


def test_offers_and_messages_go_to_the_newest_generation_only() -> None:
    placement = _two_generations()
    # Actor 1 is the least loaded of all, but of the old generation: it takes nothing new.
    picks = []
    for _ in range(8):
        idx = placement.pick()
        assert idx is not None
        placement.placed_on(idx)
        picks.append(idx)
    assert set(picks) == {2, 3} and picks.count(2) == picks.count(3) == 4
    assert {placement.pick_any() for _ in range(6)} == {2, 3}
    assert placement.newest() == 1 and placement.live() == [2, 3]


def test_a_full_newest_generation_takes_no_more_rather_than_sending_calls_back_to_the_old_code() -> None:
    placement = _two_generations()
    placement.placed_on(2)
    placement.placed_on(3)
    placement.full(2)
    placement.full(3)
    assert placement.pick() is None, "full means scale the new generation up, not fall back"


def test_an_unavailable_newest_generation_falls_back_to_the_next_older_one() -> None:
    placement = _two_generations()
    placement.set_unavailable(2, "lost")
    placement.set_unavailable(3, "slow")
    assert placement.newest() == 0
    assert placement.pick() == 1 and placement.pick(exclude={1}) == 0
    placement.set_available(3, "slow")
    assert placement.pick() == 3 and placement.pick_any() == 3


def test_a_generation_learned_later_switches_at_once_and_forget_retires() -> None:
    placement = Placement()
    placement.add(0, 10)
    placement.add(1, 10)
    assert placement.pick() == 0
    # A shard learns an actor's generation after it learned the actor (the router's reply).
    placement.add(2, 10)
    placement.set_generation(2, 1)
    assert placement.pick() == 2 and placement.live() == [2]
    for idx in (0, 1):
        placement.forget(idx)
    assert placement.capacity == {2: 10} and placement.generation == {2: 1}
    placement.set_generation(0, 5)  # a retired actor stays forgotten
    assert 0 not in placement.generation
    placement.forget(2)
    assert placement.pick() is None and placement.pick_any() is None and placement.newest() is None
