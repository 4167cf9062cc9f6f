"""Running the user's ``on_call`` and ``on_message`` handlers: one task each, failures contained.

Shared by the in-process client and the CallActors, so a handler behaves the
same in both: an exception is logged and counted and, with the default
``on_error="hangup"``, ends its call (reason ``error``) so the caller is not left
in dead air; ``"keep"`` leaves the call to whoever else holds it. With a
``timeout``, a call handler running longer is cancelled and its call hung up.
Records logged inside a handler carry its call id and app (:mod:`.logcontext`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import logcontext
from .call import Call
from .errors import ArgumentError, CallEndedError, RelayError
from .message import Message
from .protocol import constants as c

__all__ = [
    "HANDLER_ERROR_POLICIES",
    "check_error_policy",
    "run_call_handler",
    "run_message_handler",
    "warn_if_no_contexts",
]

log = logging.getLogger("relay_actors.handlers")

#: What becomes of a call whose handler raised: hung up (default) or kept as it is.
HANDLER_ERROR_POLICIES = ("hangup", "keep")
#: Attempts to hang up a call whose handler failed or ran over.
HANGUP_ATTEMPTS = 3


def check_error_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`HANDLER_ERROR_POLICIES`; else :class:`ArgumentError`."""
    if policy not in HANDLER_ERROR_POLICIES:
        raise ArgumentError(f"on_handler_error must be one of {HANDLER_ERROR_POLICIES}, not {policy!r}")
    return policy


def warn_if_no_contexts(
    logger: logging.Logger, contexts: Sequence[str], on_call: Any, on_message: Any
) -> None:
    """Handlers but no contexts: the server offers nothing, which looks like a silent hang
    (said on ``logger``, the client's)."""
    if contexts or (on_call is None and on_message is None):
        return
    handlers = " and ".join(name for name, fn in (("on_call", on_call), ("on_message", on_message)) if fn)
    logger.warning(
        "%s handler registered but contexts=[]: no inbound call or message will arrive. "
        "Pass RelayClient(contexts=[...]) or await client.receive([...]) after connecting",
        handlers,
    )


async def _end(call: Call, counters: Counter[str], counter: str) -> None:
    """Hang ``call`` up with reason ``error`` unless it already ends."""
    # A few attempts: a hang-up lost to a connection blip (the connection actor restarted,
    # a request timed out) would leave the caller on a call nobody handles, for good.
    # Ending twice is harmless: an ended call answers 404/410 (``call_gone``).
    for attempt in range(HANGUP_ATTEMPTS):
        if call.state in (c.CALL_STATE_ENDING, c.CALL_STATE_ENDED):
            return
        try:
            await call.hangup("error")
        except RelayError as exc:
            if not exc.call_gone:
                if attempt + 1 < HANGUP_ATTEMPTS:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                log.warning(
                    "could not hang up call %s after its handler failed: %s", call.call_id, exc.message
                )
                return
        counters[counter] += 1
        return


async def run_call_handler(
    handler: Callable[[Call], Coroutine[Any, Any, Any]],
    call: Call,
    counters: Counter[str],
    timeout: float | None = None,
    on_error: str = "hangup",
    app: str = "",
) -> None:
    """Run ``handler(call)`` in the current task, applying the timeout and the error policy."""
    logcontext.bind(call=call.call_id, app_name=app)
    try:
        if timeout is None:
            await handler(call)
        else:
            await asyncio.wait_for(handler(call), timeout)
        counters["handlers_completed"] += 1
    except asyncio.TimeoutError as exc:
        if isinstance(exc, CallEndedError):  # raised by the handler's own wait, not ours
            await _handler_failed(call, counters, on_error)
            return
        counters["handler_timeouts"] += 1
        log.error("on_call handler for %s ran over %ss; hanging up", call.call_id, timeout)
        await _end(call, counters, "calls_hung_up_handler_timeout")
    except asyncio.CancelledError:
        raise
    except Exception:
        await _handler_failed(call, counters, on_error)


async def _handler_failed(call: Call, counters: Counter[str], on_error: str) -> None:
    """The error policy for a handler that raised (logged with its traceback)."""
    counters["handler_errors"] += 1
    if on_error == "hangup":
        log.exception("on_call handler failed for call %s; hanging it up", call.call_id)
        await _end(call, counters, "calls_hung_up_handler_error")
    else:
        log.exception("on_call handler failed for call %s; the call is kept", call.call_id)


async def run_message_handler(
    handler: Callable[[Message], Coroutine[Any, Any, Any]],
    message: Message,
    counters: Counter[str],
    app: str = "",
) -> None:
    """Run ``handler(message)``; an exception is logged and counted."""
    logcontext.bind(message=message.message_id, app_name=app)
    try:
        await handler(message)
    except Exception:
        counters["handler_errors"] += 1
        log.exception("on_message handler failed for message %s", message.message_id)
