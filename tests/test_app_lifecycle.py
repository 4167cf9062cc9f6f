"""The driver's start decision, ownership and status report
(:mod:`relay_actors.ray_runtime.app_lifecycle`), no Ray."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from relay_actors.ray_runtime.app_lifecycle import (
    STARTING_GRACE,
    AppRecord,
    DriverInfo,
    Ownership,
    StartAction,
    app_gone,
    create_race,
    decide_start,
    handover_notice,
    ownership,
    status_report,
)

NOW = 1_000_000.0


def record(**changes: Any) -> AppRecord:
    base = AppRecord(
        app="ivr",
        state="running",
        created=NOW - 30,
        secrets="s1",
        fingerprint="full",
        settings_fingerprint="settings",
        owner="o1",
        local_ray=False,
        driver=DriverInfo(42, "10.0.0.1", "job1"),
        contexts=("office",),
    )
    return dataclasses.replace(base, **changes)


def decide(rec: AppRecord | None, router_up: bool = True, **asked: Any) -> Any:
    args = {"join": False, "upgrade": False, "fingerprint": "full", "settings_fingerprint": "settings"}
    return decide_start("ivr", rec, router_up, now=NOW, **{**args, **asked})


@pytest.mark.parametrize(
    ("rec", "router_up", "asked", "action"),
    [
        (None, False, {}, StartAction.CREATE),
        (None, False, {"join": True}, StartAction.CREATE),  # nothing to join: start it
        (None, False, {"upgrade": True}, StartAction.CREATE),
        (record(), True, {"join": True}, StartAction.JOIN),
        (record(), True, {"upgrade": True, "fingerprint": "new handlers"}, StartAction.UPGRADE),
        (record(), False, {}, StartAction.RECLAIM),  # its router is gone: a crash
        (record(state="starting", created=NOW - STARTING_GRACE - 1), False, {}, StartAction.RECLAIM),
        (record(), False, {"upgrade": True}, StartAction.RECLAIM),
    ],
)
def test_what_a_starting_driver_does(
    rec: AppRecord | None, router_up: bool, asked: dict[str, Any], action: StartAction
) -> None:
    start = decide(rec, router_up, **asked)
    assert start.action is action and start.error is None


@pytest.mark.parametrize(
    ("rec", "router_up", "asked", "code", "says"),
    [
        (None, True, {}, "app_running", "its record is gone: stop them with `relay-actors stop ivr`"),
        (
            record(state="starting", created=NOW - 5),
            False,
            {"join": True},
            "app_starting",
            "being started by another driver (started 5 s ago by pid 42 on 10.0.0.1): wait and join",
        ),
        (record(), True, {}, "app_running", "RayOptions(join=True) (relay-actors run --join)"),
        (
            record(),
            True,
            {"join": True, "fingerprint": "other"},
            "app_config_mismatch",
            "other settings (credentials, host, contexts, limits, pool or handlers",
        ),
        (
            record(),
            True,
            {"upgrade": True, "settings_fingerprint": "other"},
            "app_config_mismatch",
            "an upgrade changes the handlers' code only",
        ),
        (record(local_ray=True), True, {"upgrade": True}, "upgrade_refused", "cannot be handed over"),
    ],
)
def test_every_refusal_says_what_to_do(
    rec: AppRecord | None, router_up: bool, asked: dict[str, Any], code: str, says: str
) -> None:
    start = decide(rec, router_up, **asked)
    assert start.action is StartAction.REFUSE
    assert start.error is not None and start.error.failure == code
    assert says in start.error.message


def test_the_refusals_outside_the_decision() -> None:
    race = create_race("ivr")
    assert race.failure == "app_starting" and "at the same moment" in race.message
    gone = app_gone("relay:ivr:router")
    assert gone.failure == "app_gone" and gone.message.startswith("relay:ivr:router is not running")


@pytest.mark.parametrize(
    ("current", "as_owner", "outcome"),
    [
        (record(), True, Ownership.OURS),
        (None, True, Ownership.STOPPED_ELSEWHERE),
        (None, False, Ownership.STOPPED_ELSEWHERE),
        (record(secrets="s2"), True, Ownership.STOPPED_ELSEWHERE),  # stopped, then started anew
        (record(owner="o2", generation=1), True, Ownership.HANDED_OVER),
        (record(owner="o2", generation=1), False, Ownership.OURS),  # a joined driver stays
    ],
)
def test_ownership(current: AppRecord | None, as_owner: bool, outcome: Ownership) -> None:
    assert ownership(record(), current, as_owner=as_owner) is outcome


def test_the_handover_notice_names_the_new_owner() -> None:
    taken = record().taken_over(
        fingerprint="new", driver=DriverInfo(7, "10.0.0.2", "job2"), owner="o2", generation=3
    )
    assert (taken.owner, taken.generation, taken.state, taken.secrets) == ("o2", 3, "running", "s1")
    assert handover_notice("ivr", taken) == (
        "handed over: app ivr was upgraded to generation 3 by pid 7 on 10.0.0.2; "
        "this driver exits and the app runs on"
    )


def test_a_record_round_trips_and_keeps_keys_it_does_not_know() -> None:
    stored = {**record().to_dict(), "future_key": [1, 2]}
    again = AppRecord.from_dict(stored)
    assert again.to_dict() == stored
    old = AppRecord.from_dict({"app": "ivr", "state": "running", "secrets": "s"})  # an older record
    assert old.owner == "" and not old.local_ray and old.driver == DriverInfo()


def test_the_status_report_from_what_the_actors_answered() -> None:
    shard = {
        "shard": 0,
        "node_id": "nodeA",
        "conn.connected": 1,
        "protocol": "p",
        "conn.session_started": NOW - 10,
        "active_calls": 3,
        "calls_dropped": 2,
    }
    actors = [
        {"index": 0, "node_id": "nodeA", "calls": 1, "handler_tasks": 1},
        {"index": 2, "node_id": "nodeBBBBBBBBBB", "calls": 2, "lost_calls": 1},
        None,  # did not answer
    ]
    report = status_report(
        "ivr",
        record().to_dict(),
        {"calls": 2, "budget": 10, "leased": 4, "upgrades_failed": 1},
        router_up=True,
        capacity={0: 50, 2: 50},
        generations={"generation": 1, "actors": {0: 0, 2: 1}, "retiring": [0]},
        shard_stats=[shard, None],
        actor_stats=actors,
        ips={"nodeA": "10.0.0.1"},
        unreachable=["CallActor 3: GetTimeoutError"],
        now=NOW,
    )
    assert report["state"] == "running" and report["generation"] == 1
    assert report["active_calls"] == 3  # the shards' count is current
    assert report["max_active_calls"] == 10 and report["leased"] == 4
    assert report["shards"][0]["node"] == "10.0.0.1" and report["shards"][0]["session_age"] == 10.0
    assert [(a["index"], a["generation"], a["retiring"], a["node"]) for a in report["call_actors"]] == [
        (0, 0, True, "10.0.0.1"),
        (2, 1, False, "nodeBBBB"),
    ]
    assert report["nodes"] == {
        "10.0.0.1": {"call_actors": 1, "calls": 1},
        "nodeBBBB": {"call_actors": 1, "calls": 2},
    }
    assert report["errors"] == {"calls_dropped": 2, "lost_calls": 1, "upgrades_failed": 1}
    assert report["unreachable"] == ["CallActor 3: GetTimeoutError"]


def test_a_dead_app_reports_dead_with_its_record() -> None:
    report = status_report(
        "ivr",
        record().to_dict(),
        None,
        router_up=False,
        capacity={},
        generations=None,
        shard_stats=[],
        actor_stats=[],
        ips={},
        unreachable=[],
        now=NOW,
    )
    assert report["state"] == "dead" and report["max_active_calls"] == 0 and report["call_actors"] == []
