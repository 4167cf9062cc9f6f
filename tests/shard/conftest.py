"""A shard core driven by hand: a recording shell (no Ray, no sockets)."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from relay_actors.protocol import constants as c
from relay_actors.protocol.events import RelayEvent
from relay_actors.ray_runtime.actor_messages import ToCallActor
from relay_actors.ray_runtime.admission import LeaseLedger, lease_block
from relay_actors.ray_runtime.shard_actions import Action, LinkEntry, RequestLease
from relay_actors.ray_runtime.shard_core import ShardCore

T = TypeVar("T")


class Shell:
    """Records what the core asks for; ``full`` CallActors refuse frames (link overflow)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, ToCallActor, str | None]] = []
        self.acked: list[str] = []
        self.requests: list[tuple[int, str, str, dict[str, Any]]] = []
        self.reports: list[tuple[Any, ...]] = []
        self.actions: list[Action] = []
        #: CallActor index → what its link has not acknowledged (returned by reset_link).
        self.unacked: dict[int, list[LinkEntry]] = {}
        self.full: set[int] = set()

    def send(self, idx: int, item: ToCallActor, ack_id: str | None) -> bool:
        if idx in self.full:
            return False
        self.sent.append((idx, item, ack_id))
        self.unacked.setdefault(idx, []).append((item, ack_id))
        return True

    def ack(self, ack_ids: list[str]) -> None:
        self.acked.extend(ack_ids)

    def request(self, idx: int, req_id: str, method: str, params: dict[str, Any]) -> None:
        self.requests.append((idx, req_id, method, params))

    def report(self, item: tuple[Any, ...]) -> None:
        self.reports.append(item)

    def reset_link(self, idx: int) -> list[LinkEntry]:
        return self.unacked.pop(idx, [])

    def act(self, action: Action) -> None:
        self.actions.append(action)

    # helpers for tests
    def take(self, kind: type) -> list[Any]:
        found = [a for a in self.actions if isinstance(a, kind)]
        self.actions = [a for a in self.actions if not isinstance(a, kind)]
        return found

    def items(self, idx: int, kind: type[T]) -> list[T]:
        """The items of type ``kind`` sent to CallActor ``idx``, in order."""
        return [item for i, item, _ack in self.sent if i == idx and isinstance(item, kind)]

    def acknowledge(self, idx: int) -> None:
        """CallActor ``idx`` acknowledged everything sent to it."""
        self.unacked.pop(idx, None)


def offer(call_id: str, node: str = "n1") -> RelayEvent:
    return RelayEvent(
        c.EVENT_CALL_RECEIVE, {"call_id": call_id, "node_id": node, "call_state": "ringing"}, call_id
    )


def state(call_id: str, call_state: str) -> RelayEvent:
    return RelayEvent(
        c.EVENT_CALL_STATE, {"call_id": call_id, "node_id": "n1", "call_state": call_state}, call_id
    )


def linked(core: ShardCore, idxs: list[int] | None) -> None:
    """The links to ``idxs`` come up, as the shell reports them (a new CallActor takes no
    call before)."""
    for idx in idxs or []:
        core.call_actor_linked(idx)


def make_core(
    actors: int = 2, capacity: int = 10, budget: int = 10, over_limit: str = "drop", policy: str = "hangup"
) -> tuple[ShardCore, Shell]:
    """A started shard core with ``actors`` CallActors and a granted block of ``budget``."""
    shell = Shell()
    core = ShardCore(0, shell, over_limit=over_limit, on_call_actor_lost=policy)
    linked(core, core.pool.add_call_actors([(i, capacity) for i in range(actors)], {}))
    core.recovery.rebuilt({i: {"calls": [], "dials": [], "messages": []} for i in range(actors)}, 0.0)
    core.test_router = LeaseLedger(budget, 1, 1)  # type: ignore[attr-defined]
    core.start_leases(1, lease_block(budget, 1), 1, [])
    grant(core, shell)
    core.requests.relay_created("proto")
    return core, shell


def grant(core: ShardCore, shell: Shell, router: LeaseLedger | None = None) -> None:
    """Deliver the outstanding lease requests to ``router`` (the core's own ledger by
    default) and its replies back, until none is outstanding."""
    router = router or core.test_router  # type: ignore[attr-defined]
    for _ in range(20):
        requests = shell.take(RequestLease)
        if not requests:
            return
        for action in requests:
            reply = router.handle(action.request)
            if reply is not None:
                core.lease_reply(reply)


@pytest.fixture
def shard() -> tuple[ShardCore, Shell]:
    return make_core()
