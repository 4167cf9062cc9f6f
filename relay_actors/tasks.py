"""Background tasks held by strong references, whose failures are logged, never lost.

asyncio keeps only weak references to running tasks, so a fire-and-forget
coroutine can be garbage-collected mid-flight; and an exception in a task
nobody awaits is reported late or never. :class:`BackgroundTasks` fixes both.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["CALLBACK_CONTEXT", "BackgroundTasks", "call_handler"]

log = logging.getLogger("relay_actors")

#: The context done-callbacks that read no context variable run in: one for all, where
#: ``add_done_callback`` would copy the current context for each.
CALLBACK_CONTEXT = contextvars.Context()


class BackgroundTasks:
    """A set of running tasks (strong references) with logged failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str = "background task") -> asyncio.Task[Any]:
        # ``what`` is the task's name, and the done callback a bound method: no closure
        # per task (a call's handler is one).
        task = asyncio.ensure_future(coro)
        task.set_name(what)
        self._tasks.add(task)
        task.add_done_callback(self._done, context=CALLBACK_CONTEXT)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def call_handler(
    tasks: BackgroundTasks, handler: Callable[..., Any], *args: Any, what: str = "handler"
) -> None:
    """Call a plain or async callable; an async one runs as a background task.
    Exceptions are logged (with ``what``) and go no further."""
    try:
        result = handler(*args)
    except Exception:
        log.exception("%s failed", what)
        return
    if asyncio.iscoroutine(result):
        tasks.spawn(result, what)
