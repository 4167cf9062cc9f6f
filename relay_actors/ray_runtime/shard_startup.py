"""A shard's start-up as a state machine, sans-IO: which step next, how long to wait
before trying a failed one again, when to give up.

A (re)started connection actor needs things from others that may be restarting at
the same moment (one crash can take the router with it, or an OOM kill, or a node's
processes dying one after the other): its secrets and resume state from the KV
store, the pool snapshot from the router (the same versioned value the router pushes
on every change: a push that crosses this pull is applied only if newer), what each
CallActor holds, its lease registration. Each step is tried again with backoff (each
try bounded by the shell) rather than leaving the shard down for good; CallActors that
do not answer do not hold it up (they are *unknown* and asked later, see
:class:`~relay_actors.ray_runtime.shard_recovery.ShardRecovery`), and once the RELAY
connection exists its own reconnect loop keeps it up.

Should a step still fail at :attr:`ShardStartup.deadline`, the shard gives up: the shell
exits the process so that Ray restarts the actor (``max_restarts=-1``) and start-up
begins afresh — a shard that cannot start never stays alive and idle, which Ray would
never restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["START_DEADLINE", "ShardStartup", "StartStep"]

#: A step that still fails this long after start-up began makes the shard give up (and restart).
START_DEADLINE = 60.0


class StartStep(str, enum.Enum):
    """The steps of a shard's start-up, in order."""

    SECRETS = "secrets"  # credentials, link secret, resume state (KV store); the links open
    POOL = "pool"  # the router's pool snapshot (CallActors, generations); pushes update it later
    REBUILD = "rebuild"  # what each CallActor holds (those that do not answer: unknown, asked later)
    LEASES = "leases"  # the incarnation (KV), the lease block (router), unconfirmed hang-ups (KV)
    RELAY = "relay"  # the RELAY connection (it reconnects by itself from then on)
    SERVING = "serving"


_ORDER = list(StartStep)


@dataclass(slots=True)
class ShardStartup:
    """Where a shard's start-up is (see module docstring). Times are the shell's clock."""

    started_at: float
    deadline: float = START_DEADLINE
    first_delay: float = 0.05
    max_delay: float = 2.0
    step: StartStep = StartStep.SECRETS
    #: Failed tries, by step.
    retries: dict[StartStep, int] = field(default_factory=dict)
    #: Why the last try failed (for the log line and :attr:`gave_up`).
    last_error: str = ""
    gave_up: bool = False
    #: Seconds from ``started_at`` to the end of each step that succeeded (where start-up time goes).
    took: dict[StartStep, float] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        return self.step is StartStep.SERVING

    def done(self, step: StartStep, now: float | None = None) -> StartStep:
        """``step`` succeeded (at ``now``, if given): returns the next one."""
        if step is self.step and not self.serving:
            if now is not None:
                self.took[step] = now - self.started_at
            self.step = _ORDER[_ORDER.index(step) + 1]
        return self.step

    def failed(self, step: StartStep, error: str, now: float) -> float | None:
        """``step`` failed with ``error``: the delay before trying it again, or None when
        the deadline passed (give up: the shell exits so that Ray restarts the actor)."""
        tries = self.retries[step] = self.retries.get(step, 0) + 1
        self.last_error = error
        if now - self.started_at >= self.deadline:
            self.gave_up = True
            return None
        return min(self.max_delay, self.first_delay * 2 ** (tries - 1))

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def stats(self) -> dict[str, Any]:
        """Where start-up is and where its time went, for the shard's ``stats()``:
        ``start_began`` is the shell's clock (``time.monotonic()`` in the actor, the same
        clock for every process of a node), ``start_took`` each step's end since then."""
        return {
            "start_step": self.step.value,
            "start_began": self.started_at,
            "start_took": {step.value: round(t, 4) for step, t in self.took.items()},
        }
