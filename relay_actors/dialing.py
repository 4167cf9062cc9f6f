"""What the owner of a dial does, in-process or in a CallActor.

The sans-IO :mod:`relay_actors.protocol.dials` correlates legs and outcome by
``tag``; this module is the asyncio half both hosts share: send ``calling.dial``
(a dropped socket is not a failure — the server may have started the dial and
its legs report after the resume), wait for the outcome, give up the legs when
nobody takes them, and turn the winner into a :class:`~relay_actors.call.Call`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from .call import Call
from .errors import RelayError
from .protocol import constants as c
from .protocol.calls import CallCore
from .protocol.events import RelayEvent

__all__ = ["AbandonedDials", "await_dial", "winner"]

log = logging.getLogger("relay_actors.dialing")


async def await_dial(
    tag: str,
    send: Callable[[], Awaitable[Any]],
    outcome: asyncio.Future[Call],
    timeout: float,
    abandon: Callable[[str], None],
) -> Call:
    """Send the dial and return its answered Call.

    ``abandon(tag)`` runs when the dial ends without a taker (timed out,
    cancelled, its request failed), so its legs can be hung up.

    Raises:
        RelayError: ``dial_failed`` (set on ``outcome``), ``dial_timeout``, or the request's error.
    """
    try:
        try:
            await send()
        except RelayError as exc:
            if exc.failure != "connection_closed":
                raise
            log.warning("connection lost while dialing (tag=%s); waiting for the outcome", tag)
        return await asyncio.wait_for(asyncio.shield(outcome), timeout)
    except asyncio.TimeoutError:
        raise RelayError("dial_timeout", f"Dial timed out waiting for answer (tag={tag})") from None
    finally:
        if not outcome.done():
            abandon(tag)


def winner(known: Call | None, tag: str, info: dict[str, Any], make: Callable[[CallCore], Call]) -> Call:
    """The Call of a dial's winning leg: ``known`` (moved to ``answered`` if its state
    event has not come yet) or a new one built with ``make`` from the dial event's
    ``call`` object."""
    if known is None:
        return make(CallCore.from_params({**info, "tag": tag, "call_state": "answered"}, "outbound"))
    if not known._core.at_least(c.CALL_STATE_ANSWERED):
        known._deliver(
            RelayEvent(c.EVENT_CALL_STATE, {**info, "call_state": c.CALL_STATE_ANSWERED}, known.call_id)
        )
    if not known.node_id and info.get("node_id"):
        known._core.node_id = str(info["node_id"])
    return known


class AbandonedDials:
    """Dials nobody took (timed out, failed, cancelled), so that their legs that show up
    later — a serial dial rings its next group after we gave up — are hung up, once
    each, instead of being left answered with nobody in control. Kept for the last
    ``keep`` dials. Used wherever dial legs arrive: the in-process client and the
    connection actors (where a CallActor's abandoned dial is reported).
    """

    def __init__(self, keep: int = 1024) -> None:
        self._tags: OrderedDict[str, set[str]] = OrderedDict()
        self._keep = keep
        self.ended = 0

    def __bool__(self) -> bool:
        return bool(self._tags)

    def add(self, tag: str) -> None:
        self._tags[tag] = set()
        while len(self._tags) > self._keep:
            self._tags.popitem(last=False)

    def orphan_leg(self, event: RelayEvent) -> dict[str, Any] | None:
        """For an unroutable state event of a leg of an abandoned dial: the ``calling.end``
        params to hang it up (once per leg; None otherwise, or if it already ends)."""
        if event.event_type != c.EVENT_CALL_STATE:
            return None
        legs = self._tags.get(str(event.params.get("tag") or ""))
        call_id = event.call_id
        if legs is None or not call_id or call_id in legs:
            return None
        legs.add(call_id)
        if event.params.get("call_state") in (c.CALL_STATE_ENDING, c.CALL_STATE_ENDED):
            return None
        self.ended += 1
        return {"call_id": call_id, "node_id": event.node_id, "reason": "cancel"}
