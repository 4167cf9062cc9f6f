"""Reconnect delays: the first attempt at once (a few ms of jitter), then exponential,
jittered downwards only, capped, reset by the caller; no immediate attempt after a
connection that dropped as soon as it came up; and a client that has failed for hours
still reconnects."""

from __future__ import annotations

import random

import pytest

from relay_actors.backoff import Backoff
from relay_actors.emulator.testing import wait_until

from .conftest import Harness


def test_the_first_attempt_is_immediate_then_delays_grow_to_the_cap_with_jitter_below_nominal() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=30.0, rng=random.Random(7))
    assert backoff.nominal() == 0.0
    assert 0.0 <= backoff.next_delay() <= backoff.first_jitter  # at once, a few ms of jitter
    # That attempt failed: the backoff carries on from ``initial``, never a second immediate one.
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    delays = [backoff.next_delay() for _ in nominal]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.75 <= delay <= expected
    backoff.reset()
    assert backoff.attempts == 0 and backoff.nominal() == 0.0
    assert backoff.next_delay() <= backoff.first_jitter and backoff.nominal() == 1.0
    still = Backoff(jitter=0)
    assert [still.next_delay() for _ in range(3)] == [0.0, 1.0, 2.0]


def test_first_attempts_are_spread_over_the_jitter() -> None:
    rng = random.Random(3)
    firsts = [Backoff(rng=rng).next_delay() for _ in range(200)]
    assert max(firsts) <= 0.05 and max(firsts) - min(firsts) > 0.04


def test_no_immediate_attempt_after_a_connection_that_dropped_at_once() -> None:
    backoff = Backoff(initial=1.0, jitter=0)
    backoff.lost_after(0.2)  # a server that accepts and drops: not hammered
    assert backoff.next_delay() == 1.0
    backoff.reset()
    backoff.lost_after(120.0)  # a long-lived connection: straight back
    assert backoff.next_delay() == 0.0


@pytest.mark.parametrize("attempts", [1023, 1024, 5000, 10**6])
def test_no_overflow_after_a_long_outage(attempts: int) -> None:
    """At the 30 s cap, ~1000 attempts is 8.5 hours: 2.0**attempts must not raise."""
    backoff = Backoff(attempts=attempts)
    assert backoff.nominal() == 30.0
    assert 22.5 <= backoff.next_delay() <= 30.0


async def test_client_still_reconnects_after_thousands_of_failures(make_harness: object) -> None:
    backoff = Backoff(initial=0.01, cap=0.02)
    h: Harness = await make_harness(backoff=backoff)  # type: ignore[operator]
    backoff.attempts = 5000  # as after hours of failed attempts
    h.core.refuse_handshakes = 3
    h.core.drop(h.protocol)
    await wait_until(lambda: h.client.connected and h.client.stats()["resumes"] == 1, timeout=5)
    assert backoff.attempts == 0


def test_options_round_trip_without_the_state() -> None:
    backoff = Backoff(initial=0.07, factor=3.0, cap=0.9, jitter=0.1)
    backoff.next_delay()
    again = Backoff.from_options(backoff.options())
    expected = {"initial": 0.07, "factor": 3.0, "cap": 0.9, "jitter": 0.1, "first_jitter": 0.05}
    assert again.options() == expected
    assert again.attempts == 0  # settings travel, not the attempts so far
    assert Backoff.from_options({}).options() == Backoff().options()
