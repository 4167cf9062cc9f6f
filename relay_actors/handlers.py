"""Running the user's ``on_call`` and ``on_message`` handlers: one task each, failures contained.

Shared by the in-process client and the CallActors, so a handler behaves the
same in both: an exception is logged and counted and ends nothing but that
handler; with a ``timeout``, a call handler running longer is cancelled and its
call hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from .call import Call
from .errors import RelayError
from .message import Message

__all__ = ["run_call_handler", "run_message_handler"]

log = logging.getLogger("relay_actors.handlers")


async def run_call_handler(
    handler: Callable[[Call], Coroutine[Any, Any, Any]],
    call: Call,
    counters: Counter[str],
    timeout: float | None = None,
) -> None:
    try:
        if timeout is None:
            await handler(call)
        else:
            await asyncio.wait_for(handler(call), timeout)
        counters["handlers_completed"] += 1
    except asyncio.TimeoutError:
        counters["handler_timeouts"] += 1
        log.error("on_call handler for %s ran over %ss; hanging up", call.call_id, timeout)
        with contextlib.suppress(RelayError):
            await call.hangup("error")
    except asyncio.CancelledError:
        raise
    except Exception:
        counters["handler_errors"] += 1
        log.exception("on_call handler failed for call %s", call.call_id)


async def run_message_handler(
    handler: Callable[[Message], Coroutine[Any, Any, Any]], message: Message, counters: Counter[str]
) -> None:
    try:
        await handler(message)
    except Exception:
        counters["handler_errors"] += 1
        log.exception("on_message handler failed for message %s", message.message_id)
