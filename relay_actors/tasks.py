"""Background tasks held by strong references, whose failures are logged, never lost.

asyncio keeps only weak references to running tasks, so a fire-and-forget
coroutine can be garbage-collected mid-flight; and an exception in a task
nobody awaits is reported late or never. :class:`BackgroundTasks` fixes both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BackgroundTasks", "call_handler"]

log = logging.getLogger("relay_actors")


class BackgroundTasks:
    """A set of running tasks (strong references) with logged failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str = "background task") -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

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
