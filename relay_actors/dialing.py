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
from collections.abc import Awaitable, Callable
from typing import Any

from .call import Call
from .errors import RelayError
from .protocol import constants as c
from .protocol.calls import CallCore
from .protocol.events import RelayEvent

__all__ = ["await_dial", "winner"]

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
            if exc.code != "connection_closed":
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
