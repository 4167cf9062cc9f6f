"""What a shard core asks its shell to do: the effects interface and the typed actions.

The shard core (:mod:`relay_actors.ray_runtime.shard_core`) decides; the connection
actor carries the decisions out. On the per-event hot path the core calls the
shell's :class:`ShardEffects` methods directly (``send``, ``ack``, ``request``,
``report``: no object allocated per event); everything else, rarer, is one of the
frozen actions below, handed to :meth:`ShardEffects.act`. Each action names the
input the shell feeds back when its I/O is done.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from .actor_messages import ToCallActor
from .admission import LeaseRequest
from .pool_core import RouterReport

__all__ = [
    "Action",
    "AskLastKnown",
    "AskOwned",
    "Checkpoint",
    "Command",
    "CommandPurpose",
    "ConfirmLoss",
    "LinkEntry",
    "LoseActor",
    "LossHandled",
    "RequestLease",
    "RetryHangups",
    "ShardEffects",
    "StoreUnconfirmed",
    "TrackContexts",
    "WaitForRoom",
    "WantCapacity",
]

#: One item on a link and the RELAY ack id it carries (None: nothing to ack).
LinkEntry = tuple[ToCallActor, "str | None"]


class CommandPurpose(str, enum.Enum):
    """Why the shard sends a RELAY command of its own (not a CallActor's request)."""

    PASS = "pass"  # over the limit, ``over_limit="pass"``
    END_ORPHAN = "end_orphan"  # a late leg of a dial its CallActor abandoned
    END_LOST = "end_lost"  # a call of a lost CallActor (the lost-actor policy)
    END_DRAINED = "end_drained"  # a call of a retiring CallActor past its drain deadline


@dataclass(frozen=True, slots=True)
class Command:
    """Send ``method`` with ``params`` to RELAY; its outcome goes to
    :meth:`ShardCore.command_done` (only ``END_LOST`` needs it)."""

    purpose: CommandPurpose
    method: str
    params: dict[str, Any]
    call_id: str


@dataclass(frozen=True, slots=True)
class RequestLease:
    """A lease request is outstanding: send it to the router, retransmitting it unchanged
    until answered (:meth:`ShardCore.lease_reply`); after ``LEASE_TIMEOUT`` with offers
    waiting, :meth:`ShardCore.lease_timed_out`."""

    request: LeaseRequest


@dataclass(frozen=True, slots=True)
class WantCapacity:
    """No CallActor had room for an admitted offer: ask the router to scale up."""


@dataclass(frozen=True, slots=True)
class WaitForRoom:
    """The offer of ``call_id`` waits for a lagging CallActor: after ``ROOM_WAIT`` (well
    inside its ring time),
    :meth:`~relay_actors.ray_runtime.shard_room.ShardRoomWait.over` (with ``rounds``,
    this round's number)."""

    call_id: str
    rounds: int = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Save the session's resume state (coalesced by the shell)."""


@dataclass(frozen=True, slots=True)
class TrackContexts:
    """A receive/unreceive succeeded: update the session's contexts, then checkpoint."""

    method: str
    contexts: list[str]


@dataclass(frozen=True, slots=True)
class StoreUnconfirmed:
    """Persist the hang-ups not confirmed yet (``[call_id, node_id]`` pairs): no
    CallActor holds those calls, so a restart of this shard must find them."""

    calls: list[list[str]]


@dataclass(frozen=True, slots=True)
class RetryHangups:
    """Some hang-ups failed: call :meth:`ShardRecovery.retry_hangups` with backoff while
    :attr:`ShardCore.unconfirmed` is not empty (and RELAY is connected)."""


@dataclass(frozen=True, slots=True)
class AskOwned:
    """Ask CallActor ``idx`` what it holds for this shard: :meth:`ShardCore.owned_answer`,
    or :meth:`ShardCore.owned_failed`."""

    idx: int


@dataclass(frozen=True, slots=True)
class AskLastKnown:
    """CallActor ``idx`` was lost while unknown: ask the router which calls of this shard
    it last knew there, then :meth:`ShardCore.last_known` (an empty list if it cannot say)."""

    idx: int


@dataclass(frozen=True, slots=True)
class ConfirmLoss:
    """The loss of ``idx`` is handled: refresh the pool and learn its incarnation once it
    answers (bounded), then :meth:`ShardCore.loss_confirmed`."""

    idx: int


@dataclass(frozen=True, slots=True)
class LossHandled:
    """The lost-actor policy is done with ``idx``; ``result`` counts what it did."""

    idx: int
    result: dict[str, int]


@dataclass(frozen=True, slots=True)
class LoseActor:
    """CallActor ``idx``'s link queue overflowed while sending ``overflow``: apply the
    lost-actor policy on the next loop turn (:meth:`ShardCore.call_actor_lost`), not in
    the middle of the dispatch that found it."""

    idx: int
    overflow: LinkEntry


Action = (
    Command
    | RequestLease
    | WantCapacity
    | WaitForRoom
    | Checkpoint
    | TrackContexts
    | StoreUnconfirmed
    | RetryHangups
    | AskOwned
    | AskLastKnown
    | ConfirmLoss
    | LossHandled
    | LoseActor
)


class ShardEffects(Protocol):
    """What the connection actor does for its shard core."""

    def send(self, idx: int, item: ToCallActor, ack_id: str | None) -> bool:
        """Send ``item`` to CallActor ``idx`` (``ack_id`` is acked to RELAY once it
        acknowledges it; the shell encodes it: :func:`~relay_actors.ray_runtime.actor_messages.encode`);
        False if that link's queue is full (nothing sent)."""

    def ack(self, ack_ids: list[str]) -> None:
        """Ack these RELAY events now."""

    def request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        """Send CallActor ``idx``'s request to RELAY; its outcome goes to
        :meth:`ShardCore.request_done`."""

    def report(self, item: RouterReport) -> None:
        """Batch ``item`` to the router's record of this shard's calls."""

    def reset_link(self, idx: int) -> list[LinkEntry]:
        """Void the link session to ``idx`` (it starts afresh); return what it had not
        acknowledged, in order (decoded)."""

    def act(self, action: Action) -> None:
        """Carry out one of the rarer actions."""
