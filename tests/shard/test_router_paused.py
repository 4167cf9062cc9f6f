"""A paused router (SIGSTOP, a GC pause, a frozen VM) costs calls nothing while the
shard's leases last: admission takes slots from the block the shard holds and gives
them back to it when calls end, with the router out of the path; only offers beyond the
grant wait for the router (and are not dropped for it until the lease timeout)."""

from __future__ import annotations

from .conftest import grant, make_core, offer, state


def test_calls_come_and_go_on_the_held_grant_while_the_router_does_not_answer() -> None:
    core, shell = make_core(budget=12)
    assert core.leases is not None
    for i in range(3):
        core.on_event(offer(f"warm{i}"), f"ack-warm{i}")
        grant(core, shell)
    granted = core.leases.granted
    assert granted >= 3
    # The router stops answering: what the shard asks for from now on stays unanswered.
    for i in range(200):
        ended = f"warm{i % 3}" if i < 3 else f"c{i - 3}"
        core.on_event(state(ended, "ended"), f"ack-end{i}")
        core.on_event(offer(f"c{i}"), f"ack-c{i}")
        assert f"c{i}" in core.routes.calls, f"offer {i} waited for the paused router"
    assert core.leases.waiting == {} and core.counters["offers_dropped"] == 0
    assert core.leases.granted <= granted  # nothing granted meanwhile: it served on what it held


def test_offers_beyond_the_grant_wait_for_the_router_and_are_admitted_when_it_answers() -> None:
    core, shell = make_core(budget=12)
    assert core.leases is not None
    spare = core.leases.spare
    for i in range(spare + 2):
        core.on_event(offer(f"c{i}"), f"ack-c{i}")
    assert len(core.routes.calls) == spare and len(core.leases.waiting) == 2
    assert core.leases.outstanding is not None and shell.actions  # asked, not answered yet
    assert core.counters["offers_dropped"] == 0  # waiting, not dropped, while the router is paused
    grant(core, shell)  # the router answers again
    assert len(core.routes.calls) == spare + 2 and not core.leases.waiting
