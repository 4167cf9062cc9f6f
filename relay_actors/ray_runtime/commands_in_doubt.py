"""Commands in doubt after a connection actor's crash, sans-IO: resolved from the resumed
session before anything is sent again.

A CallActor's ``calling.answer`` or ``calling.end`` in flight when its connection actor
died may or may not have reached the server: the result was lost with the process.
Sending it again blindly (as "idempotent") answered calls twice at the server, which a
stricter service answers with an error a handler would see. So such a command is
*parked* instead of failed; the restarted connection actor resumes the session, the
server redelivers every event it had not seen acknowledged, and the shard then sends
``RESUMED`` on each link (behind those events: see
:meth:`~relay_actors.ray_runtime.shard_core.ShardCore.session_settled`). At that point
the call's state shows whether the command took effect — answered (or further) for
``answer``, ending (or further) for ``end``, or the call gone — and only a command
provably not done is sent again, to the new connection actor.

The same when the connection actor lives on but its WebSocket was cut while the command
was out (a server disconnect, a dropped socket: the request fails ``connection_closed``):
the command is parked (:meth:`CommandsInDoubt.cut_off`) until that shard's session is
resumed and settled, instead of failing to the handler, whose ``answer``/``end`` would
otherwise be sent again blindly (a chaos run found a call answered twice that way, the
second refused with 409 and the healthy call ended by its handler's error policy).

Other commands in flight fail as before (``connection_lost``): whether a ``play`` ran
cannot be read from the call's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import constants as c
from ..protocol.calls import STATE_RANK
from .actor_messages import RequestItem

__all__ = ["SHOWN_BY", "CommandsInDoubt"]

#: Each command resolvable from the session, and the call state that shows it took effect.
SHOWN_BY: dict[str, str] = {"calling.answer": c.CALL_STATE_ANSWERED, "calling.end": c.CALL_STATE_ENDING}


class CommandsInDoubt:
    """The resolvable commands a CallActor has in flight, and those parked by a shard restart."""

    def __init__(self) -> None:
        #: req_id → (shard, method, params) of each resolvable command in flight.
        self.in_flight: dict[str, tuple[int, str, dict[str, Any]]] = {}
        #: shard → the req_ids parked until that shard's session is resumed.
        self.parked: dict[int, list[str]] = {}

    def sent(self, req_id: str, shard: int, method: str, params: dict[str, Any]) -> None:
        if method in SHOWN_BY:
            self.in_flight[req_id] = (shard, method, params)

    def finished(self, req_id: str) -> None:
        self.in_flight.pop(req_id, None)

    def shard_restarted(self, shard: int, req_ids: list[str]) -> list[str]:
        """``shard`` restarted with ``req_ids`` in flight to it: park the resolvable ones;
        returns the others (they fail: they may or may not have been executed)."""
        parked = self.parked.setdefault(shard, [])
        fail = []
        for req_id in req_ids:
            if req_id in self.in_flight:
                parked.append(req_id)
            else:
                fail.append(req_id)
        return fail

    def cut_off(self, req_id: str) -> bool:
        """The connection was cut while ``req_id`` was out (its shard lives on and resumes
        the session): park it, if resolvable, until that shard's session is resumed.
        False: not resolvable (it fails)."""
        entry = self.in_flight.get(req_id)
        if entry is None:
            return False
        parked = self.parked.setdefault(entry[0], [])
        if req_id not in parked:
            parked.append(req_id)
        return True

    def resumed(
        self, shard: int, state_of: Callable[[str], str | None]
    ) -> tuple[list[str], list[RequestItem]]:
        """``shard``'s session is resumed and what it redelivered is applied: the parked
        commands whose effect the call's state shows (``state_of(call_id)``; None: the call
        is gone) are done; the others are to be sent again (same request id)."""
        done: list[str] = []
        resend: list[RequestItem] = []
        for req_id in self.parked.pop(shard, []):
            entry = self.in_flight.get(req_id)
            if entry is None:
                continue  # finished meanwhile (its safety-net timer)
            _shard, method, params = entry
            state = state_of(str(params.get("call_id", "")))
            if state is None or STATE_RANK.get(state, -1) >= STATE_RANK[SHOWN_BY[method]]:
                done.append(req_id)
            else:
                resend.append(RequestItem(req_id, method, params))
        return done, resend
