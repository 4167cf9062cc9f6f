"""A shard's start-up state machine (ShardStartup), fed by hand."""

from __future__ import annotations

from relay_actors.ray_runtime.shard_startup import ShardStartup, StartStep


def test_the_steps_run_in_order_until_serving() -> None:
    startup = ShardStartup(0.0)
    seen = []
    while not startup.serving:
        seen.append(startup.step)
        startup.done(startup.step)
    assert seen == [StartStep.SECRETS, StartStep.POOL, StartStep.REBUILD, StartStep.LEASES, StartStep.RELAY]


def test_a_failed_step_is_tried_again_with_backoff_then_given_up_at_the_deadline() -> None:
    startup = ShardStartup(0.0, deadline=10.0, first_delay=0.05, max_delay=1.0)
    startup.done(StartStep.SECRETS)
    delays = [
        startup.failed(StartStep.POOL, "ActorUnavailableError", now) for now in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    ]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert startup.step is StartStep.POOL and not startup.gave_up  # still trying the same step
    assert startup.failed(StartStep.POOL, "ActorUnavailableError", 10.0) is None
    assert startup.gave_up and startup.last_error == "ActorUnavailableError" and startup.total_retries == 7


def test_a_late_success_of_an_earlier_step_does_not_move_it_back() -> None:
    startup = ShardStartup(0.0)
    startup.done(StartStep.SECRETS)
    startup.done(StartStep.POOL)
    assert startup.done(StartStep.SECRETS) is StartStep.REBUILD


def test_its_stats_say_the_step_and_where_the_time_went() -> None:
    startup = ShardStartup(100.0)
    startup.done(StartStep.SECRETS, 100.25)
    startup.done(StartStep.POOL, 100.5)
    assert startup.stats() == {
        "start_step": "rebuild",
        "start_began": 100.0,
        "start_took": {"secrets": 0.25, "pool": 0.5},
    }
