"""The driver's decisions about an app's lifecycle, sans-IO: pure functions over a typed record.

The driver (:mod:`relay_actors.ray_runtime.driver`) reads the app's record from the KV
store and looks its router up; these functions decide what that means:

* :func:`decide_start`: **create** the app, **join** it, **upgrade** it, **reclaim** a
  crashed one (then create), or **refuse** with the :class:`~relay_actors.errors.RelayError`
  that says what to do;
* :func:`ownership`: whether the app is still **ours**, was **stopped elsewhere**
  (``relay-actors stop``), or **handed over** (another driver upgraded it);
* :func:`status_report`: ``relay-actors status`` from what the app's actors answered.

No ``ray``, no KV store: each decision is a unit test (``tests/test_app_lifecycle.py``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RelayError

__all__ = [
    "STARTING_GRACE",
    "AppRecord",
    "DriverInfo",
    "Ownership",
    "Start",
    "StartAction",
    "app_gone",
    "create_race",
    "decide_start",
    "handover_notice",
    "ownership",
    "status_report",
]

#: A record "starting" for longer than this, with no router, is a crashed start.
STARTING_GRACE = 120.0


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """The driver that owns the app: its pid, node address and Ray job."""

    pid: int | str = "?"
    node_ip: str = "?"
    job_id: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DriverInfo:
        d = d or {}
        return cls(d.get("pid", "?"), str(d.get("node_ip", "?")), d.get("job_id"))


@dataclass(frozen=True, slots=True)
class AppRecord:
    """An app's record in the KV store (see :mod:`relay_actors.ray_runtime.kvstore`)."""

    app: str
    #: ``"starting"`` until every actor is ready, then ``"running"``.
    state: str
    #: Wall clock of the creation.
    created: float
    #: This deploy's mark: names its KV namespace; a new deploy of the app has another.
    secrets: str
    #: HMAC of the whole configuration (with the handlers): what a joining driver must match.
    fingerprint: str
    #: The same without the handlers: what an upgrading driver must match.
    settings_fingerprint: str
    #: The owning driver's mark (an upgrade moves it).
    owner: str
    #: The app runs on a local Ray its driver started (it ends with it: no hand-over).
    local_ray: bool
    driver: DriverInfo
    host: str = ""
    contexts: tuple[str, ...] = ()
    connections: int = 1
    max_call_actors: int = 0
    max_active_calls: int = 0
    #: The code generation deployed last (0: the first).
    generation: int = 0
    version: int = 1
    #: Keys this version does not know, kept as they were.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AppRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            app=str(d.get("app", "")),
            state=str(d.get("state", "unknown")),
            created=float(d.get("created", 0) or 0),
            secrets=str(d.get("secrets", "")),
            fingerprint=str(d.get("fingerprint", "")),
            settings_fingerprint=str(d.get("settings_fingerprint", "")),
            owner=str(d.get("owner", "")),
            local_ray=bool(d.get("local_ray", False)),
            driver=DriverInfo.from_dict(d.get("driver")),
            host=str(d.get("host", "")),
            contexts=tuple(d.get("contexts") or ()),
            connections=int(d.get("connections", 1) or 1),
            max_call_actors=int(d.get("max_call_actors", 0) or 0),
            max_active_calls=int(d.get("max_active_calls", 0) or 0),
            generation=int(d.get("generation", 0) or 0),
            version=int(d.get("version", 1) or 1),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["driver"] = dataclasses.asdict(self.driver)
        d["contexts"] = list(self.contexts)
        return {**self.extra, **d}

    def describe(self, now: float) -> str:
        """Who started it and when, for errors and logs."""
        age = max(0.0, now - self.created)
        return f"started {age:.0f} s ago by pid {self.driver.pid} on {self.driver.node_ip}"

    def taken_over(self, *, fingerprint: str, driver: DriverInfo, owner: str, generation: int) -> AppRecord:
        """The record once an upgrading driver deployed ``generation`` and owns the app."""
        return dataclasses.replace(
            self, fingerprint=fingerprint, driver=driver, owner=owner, generation=generation, state="running"
        )


class StartAction(str, enum.Enum):
    """What a starting driver does."""

    CREATE = "create"
    JOIN = "join"
    UPGRADE = "upgrade"
    #: The record's router is gone (a crash): remove what is left, then create.
    RECLAIM = "reclaim"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Start:
    action: StartAction
    #: Why not (``REFUSE`` only): raise it.
    error: RelayError | None = None


def _refuse(code: str, message: str) -> Start:
    return Start(StartAction.REFUSE, RelayError(code, message))


def decide_start(
    app: str,
    record: AppRecord | None,
    router_up: bool,
    *,
    join: bool,
    upgrade: bool,
    fingerprint: str,
    settings_fingerprint: str,
    now: float,
) -> Start:
    """What a driver starting app ``app`` does, given the app's record (None: none),
    whether its router runs, what the driver asked (``join``, ``upgrade``) and its
    configuration's fingerprints (with and without the handlers)."""
    if record is None:
        if router_up:
            return _refuse(
                "app_running",
                f"actors of Ray app {app!r} are running but its record is gone: "
                f"stop them with `relay-actors stop {app}`, or pass a different RayOptions(app=...)",
            )
        return Start(StartAction.CREATE)
    described = record.describe(now)
    if not router_up:
        if record.state == "starting" and now - record.created < STARTING_GRACE:
            return _refuse(
                "app_starting",
                f"Ray app {app!r} is being started by another driver ({described}): "
                "wait and join it with RayOptions(join=True), or pass a different RayOptions(app=...)",
            )
        return Start(StartAction.RECLAIM)
    if upgrade:
        return _decide_upgrade(app, record, settings_fingerprint, described)
    return _decide_join(app, record, join, fingerprint, described)


def _decide_upgrade(app: str, record: AppRecord, settings_fingerprint: str, described: str) -> Start:
    if record.settings_fingerprint != settings_fingerprint:
        return _refuse(
            "app_config_mismatch",
            f"Ray app {app!r} is running with other settings (credentials, host, contexts, limits "
            f"or pool; {described}): an upgrade changes the handlers' code only. Stop it "
            f"first (relay-actors stop {app}) or pass a different RayOptions(app=...)",
        )
    if record.local_ray:
        return _refuse(
            "upgrade_refused",
            f"Ray app {app!r} runs on a local Ray its driver started ({described}), which "
            "ends with that driver: it cannot be handed over. Run apps to upgrade on a cluster "
            "(ray start --head; relay-actors run --address HOST:PORT)",
        )
    return Start(StartAction.UPGRADE)


def _decide_join(app: str, record: AppRecord, join: bool, fingerprint: str, described: str) -> Start:
    if not join:
        return _refuse(
            "app_running",
            f"Ray app {app!r} is already running ({described}). To share it, pass "
            f"RayOptions(join=True) (relay-actors run --join) with the same settings; to deploy new "
            f"handler code to it, RayOptions(upgrade=True) (relay-actors run --upgrade); to run "
            f"another app, pass a different RayOptions(app=...) (--app NAME); to replace it, "
            f"stop it first: relay-actors stop {app}",
        )
    if record.fingerprint != fingerprint:
        return _refuse(
            "app_config_mismatch",
            f"Ray app {app!r} is running with other settings (credentials, host, contexts, limits, "
            f"pool or handlers; {described}): stop it first (relay-actors stop {app}), "
            "deploy new handlers with RayOptions(upgrade=True) (relay-actors run --upgrade), "
            "or pass a different RayOptions(app=...)",
        )
    return Start(StartAction.JOIN)


def create_race(app: str) -> RelayError:
    """Another driver created the record first (between our read and our create)."""
    return RelayError(
        "app_starting",
        f"another driver started Ray app {app!r} at the same moment: "
        "join it with RayOptions(join=True), or pass a different RayOptions(app=...)",
    )


def app_gone(actor: str) -> RelayError:
    """An actor of an app being joined or upgraded is not there."""
    return RelayError("app_gone", f"{actor} is not running: the app is stopping or broken")


class Ownership(str, enum.Enum):
    """Whose the app is, as a running driver sees it."""

    OURS = "ours"
    #: Its record is gone or another deploy's (``relay-actors stop``, then maybe a new start).
    STOPPED_ELSEWHERE = "stopped_elsewhere"
    #: Same deploy, another owner: an upgrade took it over.
    HANDED_OVER = "handed_over"


def ownership(mine: AppRecord, current: AppRecord | None, *, as_owner: bool) -> Ownership:
    """Compare the record this driver started or joined with (``mine``) to the one stored
    now (``current``); ``as_owner``: this driver owns the app (a joined one does not, and
    an upgrade by someone else changes nothing for it)."""
    if current is None or current.secrets != mine.secrets:
        return Ownership.STOPPED_ELSEWHERE
    if as_owner and current.owner != mine.owner:
        return Ownership.HANDED_OVER
    return Ownership.OURS


def handover_notice(app: str, current: AppRecord) -> str:
    """The line a driver whose app was upgraded by another ends with."""
    return (
        f"handed over: app {app} was upgraded to generation {current.generation} "
        f"by pid {current.driver.pid} on {current.driver.node_ip}; this driver exits and "
        "the app runs on"
    )


#: Counter names that count trouble (shown as "errors" by status).
ERROR_WORDS = ("error", "dropped", "failed", "lost", "violation", "unroutable", "timeout", "double")


def _count_errors(errors: dict[str, int], stats: Mapping[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, int) and value and any(w in key for w in ERROR_WORDS):
            errors[key] = errors.get(key, 0) + value


def _node(ips: Mapping[str, str], stats: Mapping[str, Any]) -> str:
    node_id = str(stats.get("node_id", ""))
    return ips.get(node_id, node_id[:8])


def _shard_row(stats: Mapping[str, Any], ips: Mapping[str, str], now: float) -> dict[str, Any]:
    started = stats.get("conn.session_started")
    return {
        "shard": stats["shard"],
        "node": _node(ips, stats),
        "connected": bool(stats.get("conn.connected")),
        "protocol": stats.get("protocol", ""),
        "session_age": round(now - started, 1) if started else None,
        "reconnects": stats.get("conn.reconnects", 0),
        "resumes": stats.get("conn.resumes", 0),
        "active_calls": stats.get("active_calls", 0),
        "granted": stats.get("granted", 0),
        "waiting_offers": stats.get("waiting_offers", 0),
    }


def _actor_rows(
    actor_stats: Sequence[Mapping[str, Any] | None],
    ips: Mapping[str, str],
    capacity: Mapping[int, int],
    gens: Mapping[str, Any],
    errors: dict[str, int],
) -> list[dict[str, Any]]:
    rows = []
    for stats in filter(None, actor_stats):
        _count_errors(errors, stats)
        idx = stats["index"]
        rows.append(
            {
                "index": idx,
                "node": _node(ips, stats),
                "calls": stats.get("calls", 0),
                "capacity": capacity.get(idx, 0),
                "handler_tasks": stats.get("handler_tasks", 0),
                "generation": gens["actors"].get(idx, 0),
                "retiring": idx in gens["retiring"],
            }
        )
    return rows


def status_report(
    app: str,
    record: Mapping[str, Any] | None,
    router_stats: Mapping[str, Any] | None,
    *,
    router_up: bool,
    capacity: Mapping[int, int],
    generations: Mapping[str, Any] | None,
    shard_stats: Sequence[Mapping[str, Any] | None],
    actor_stats: Sequence[Mapping[str, Any] | None],
    ips: Mapping[str, str],
    unreachable: Sequence[str],
    now: float,
) -> dict[str, Any]:
    """``relay-actors status``: one app's state from what its actors answered (None: no
    answer), each CallActor's ``capacity`` and generation (``generations``, as
    :meth:`~relay_actors.ray_runtime.router.Router.generations_info` gives it), the nodes'
    addresses (``ips``) and the actors that did not answer (``unreachable``)."""
    record = record or {}
    router = router_stats or {}
    gens = generations or {"generation": 0, "actors": {}, "retiring": []}
    errors: dict[str, int] = {}
    shard_rows = []
    for stats in filter(None, shard_stats):
        _count_errors(errors, stats)
        shard_rows.append(_shard_row(stats, ips, now))
    actor_rows = _actor_rows(actor_stats, ips, capacity, gens, errors)
    nodes: dict[str, dict[str, int]] = {}
    for row in actor_rows:
        per_node = nodes.setdefault(row["node"], {"call_actors": 0, "calls": 0})
        per_node["call_actors"] += 1
        per_node["calls"] += row["calls"]
    _count_errors(errors, router)
    return {
        "app": app,
        "state": record.get("state", "unknown") if router_up else "dead",
        "created": record.get("created"),
        "driver": record.get("driver"),
        "contexts": record.get("contexts"),
        "generation": gens["generation"],
        # The shards' own counts are current; the router learns of calls in batches.
        "active_calls": max(router.get("calls", 0), sum(r["active_calls"] for r in shard_rows)),
        "max_active_calls": router.get("budget", record.get("max_active_calls")),
        "leased": router.get("leased"),
        "shards": sorted(shard_rows, key=lambda r: r["shard"]),
        "call_actors": sorted(actor_rows, key=lambda r: r["index"]),
        "nodes": nodes,
        "errors": dict(sorted(errors.items())),
        "unreachable": list(unreachable),
        "metrics_url": router.get("metrics_url"),
        "metrics_error": router.get("metrics_error"),
    }
