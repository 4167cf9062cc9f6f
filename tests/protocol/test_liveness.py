"""Liveness: a stall of our own loop never condemns a request or the peer; real silence does."""

from __future__ import annotations

from relay_actors.protocol.liveness import Liveness


def test_an_on_time_timer_with_a_silent_peer_times_out_as_half_open() -> None:
    live = Liveness()
    live.heard_from_peer(0.0)
    expiry = live.expired(started=live.awake(0.0), timeout=5.0, scheduled=5.0, now=5.001)
    assert expiry.rearm == 0 and expiry.half_open


def test_a_talking_peer_times_the_request_out_but_keeps_the_socket() -> None:
    live = Liveness()
    live.heard_from_peer(4.0)  # an event after the request was sent
    expiry = live.expired(started=0.0, timeout=5.0, scheduled=5.0, now=5.0)
    assert expiry.rearm == 0 and not expiry.half_open


def test_a_late_timer_never_decides_and_gives_the_peer_a_turn() -> None:
    live = Liveness()
    live.heard_from_peer(0.0)
    # The loop blocked from 1 s to 6 s: the timer due at 5 s runs at 6 s.
    expiry = live.expired(started=0.0, timeout=5.0, scheduled=5.0, now=6.0)
    assert expiry.rearm >= 1.0
    assert live.stalls == 1 and live.stalled == 1.0
    # The re-armed timer, on time, with the peer still silent: now it is half-open.
    when = 6.0 + expiry.rearm
    again = live.expired(started=0.0, timeout=5.0, scheduled=when, now=when, graced=expiry.grace)
    assert again.rearm == 0 and again.half_open


def test_a_request_written_late_gets_its_whole_timeout_after_the_stall() -> None:
    live = Liveness()
    live.heard_from_peer(0.0)
    started = live.awake(0.0)
    # Made at 0; its frame waited for the end of the iteration, which a handler
    # blocked until 6 s: the write ran 6 s late.
    assert live.late(0.0, 6.0)
    expiry = live.expired(started=started, timeout=5.0, scheduled=5.0, now=6.0)
    assert 4.9 <= expiry.rearm <= 5.0  # awake time so far: ~0
    assert live.stalled == 6.0  # the timer's own sighting of the same stall counts once
    assert live.stalls == 1


def test_silence_excludes_our_own_stall() -> None:
    live = Liveness()
    live.heard_from_peer(10.0)
    started = live.awake(10.0)
    live.late(10.0, 16.0)
    assert live.silent_for(16.5) == 0.5
    expiry = live.expired(started=started, timeout=5.0, scheduled=15.0, now=16.0)
    assert expiry.rearm > 0  # late: looked at again, not condemned


def test_separate_stalls_add_up_and_ordinary_jitter_does_not_count() -> None:
    live = Liveness(tolerance=0.05)
    assert not live.late(1.0, 1.01)
    assert live.late(2.0, 3.0)
    assert live.late(2.5, 3.5)  # overlaps the first sighting: only 0.5 s more
    assert live.late(10.0, 12.0)
    assert live.stalls == 2 and live.stalled == 3.5
    assert live.awake(20.0) == 16.5


def test_a_timer_on_time_after_stalls_elsewhere_is_rearmed_for_what_is_left() -> None:
    live = Liveness()
    live.heard_from_peer(0.0)
    live.late(1.0, 3.0)  # 2 s of stall seen by another callback
    expiry = live.expired(started=0.0, timeout=5.0, scheduled=5.0, now=5.0)
    assert expiry.rearm == 2.0 and not expiry.half_open


def test_a_loop_late_on_every_timer_still_times_requests_out() -> None:
    """Overloaded, not stalled: each timer 0.2 s late. One grace turn, then a verdict."""
    live = Liveness()
    live.heard_from_peer(0.0)
    scheduled, graced, verdicts = 5.0, False, 0
    for _ in range(20):
        expiry = live.expired(
            started=0.0, timeout=5.0, scheduled=scheduled, now=scheduled + 0.2, graced=graced
        )
        if expiry.rearm == 0:
            verdicts += 1
            break
        graced = graced or expiry.grace
        scheduled = scheduled + 0.2 + expiry.rearm
    assert verdicts == 1 and scheduled < 9.0
    assert expiry.half_open


def test_a_blocking_stall_marks_the_loop_for_a_while_a_busy_iteration_does_not() -> None:
    live = Liveness()
    assert live.late(10.0, 10.2)  # a busy iteration (a burst's frames): a stall, not blocking
    assert not live.handlers_block(10.3)
    assert live.late(20.0, 26.0)  # a handler slept 6 s
    assert live.handlers_block(26.1) and live.handlers_block(35.9)
    assert not live.handlers_block(36.1)  # ran smoothly for BLOCKING_WINDOW since
