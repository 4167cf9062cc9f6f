"""The reconnect policy: a refused resume starts a fresh session at once, wrong credentials
and wrong settings give up after the cap before the first success, and never after it."""

from __future__ import annotations

from relay_actors.backoff import Backoff
from relay_actors.protocol.reconnect import Next, ReconnectPolicy


def _policy(max_failures: int = 3) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(jitter=0), max_failures)


def test_the_first_attempt_goes_at_once_and_failures_back_off() -> None:
    policy = _policy()
    assert policy.outage_delay(at_start=True) == 0.0
    assert [policy.retry().delay for _ in range(3)] == [1.0, 2.0, 4.0]


def test_an_outage_starts_with_an_immediate_attempt_unless_the_connection_flapped() -> None:
    policy = _policy()
    policy.authenticated()
    policy.lost(lived=60.0)
    assert policy.outage_delay() == 0.0
    policy.authenticated()
    policy.lost(lived=0.1)  # dropped as soon as it came up: no immediate attempt
    assert policy.outage_delay() == 1.0


def test_a_refused_resume_starts_a_fresh_session_at_once_without_counting() -> None:
    policy = _policy(max_failures=1)
    policy.outage_delay(at_start=True)
    for _ in range(3):
        assert policy.rejected(resuming=True) == Next(0.0, fresh_session=True)
    assert policy.rejections == 0 and policy.backoff.attempts == 1


def test_rejected_credentials_give_up_after_the_cap_before_any_success() -> None:
    policy = _policy(max_failures=3)
    policy.outage_delay(at_start=True)
    assert policy.rejected(resuming=False) == Next(1.0)
    assert policy.rejected(resuming=False) == Next(2.0)
    assert policy.rejected(resuming=False).give_up
    assert policy.rejections == 3


def test_after_a_success_rejections_and_transport_errors_are_retried_for_ever() -> None:
    policy = _policy(max_failures=2)
    policy.rejected(resuming=False)
    policy.authenticated()
    assert policy.rejections == 0 and policy.backoff.attempts == 0 and policy.settings_proven
    steps = [policy.rejected(resuming=False) for _ in range(5)]
    steps += [policy.unreachable(misconfigured=True) for _ in range(5)]
    assert not any(step.give_up for step in steps)
    assert policy.setup_failures == 0


def test_wrong_settings_give_up_after_the_cap_and_plain_network_errors_never() -> None:
    policy = _policy(max_failures=2)
    assert not policy.settings_proven
    for _ in range(10):
        assert not policy.unreachable(misconfigured=False).give_up
    first = policy.unreachable(misconfigured=True)
    assert not first.give_up and first.delay > 0
    assert policy.unreachable(misconfigured=True).give_up
    assert policy.setup_failures == 2
