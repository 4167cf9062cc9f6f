"""A spare passes the shard's Ray calls on to the process that serves it.

With a warm standby (:mod:`~relay_actors.ray_runtime.shard_standby`) a shard's callers
(the driver, the router, the CallActors, the metrics endpoint) address its main seat by
name, whichever of its two processes serves. A Ray method marked :func:`served_here` runs
where the shard is served; on the spare it is passed on (:func:`forward`) and run there
by :func:`run_forwarded`, which never passes it back: two spares with stale views of
each other would otherwise bounce it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from ..errors import RelayError

__all__ = ["FORWARDABLE", "FORWARD_TIMEOUT", "forward", "forwarding", "run_forwarded", "served_here"]

#: A call passed on is awaited this long at most (its callers' own deadlines are
#: shorter: the router's ``call_actor_lost`` waits 60 s).
FORWARD_TIMEOUT = 65.0

#: The Ray methods a spare passes on to the process serving the shard.
FORWARDABLE = frozenset(
    {
        "ready", "call_actor_lost", "execute", "reset_links", "apply_pool", "call_actor_busy",
        "forget_call_actor", "end_calls_on", "lease_state", "session_info", "stats", "shutdown",
    }
)  # fmt: skip

#: Set while this process runs a call another process of the shard passed on to it.
_FORWARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("relay_forwarded", default=False)

_M = TypeVar("_M", bound=Callable[..., Awaitable[Any]])


def forwarding() -> bool:
    """Whether the running call was passed on by the shard's other process."""
    return _FORWARDED.get()


def served_here(method: _M) -> _M:
    """A Ray method of the shard: run here unless ``self.spare_for()`` names the process
    that serves the shard (this process is its spare), else passed on to it."""
    name = method.__name__
    assert name in FORWARDABLE, name

    @functools.wraps(method)
    async def served(self: Any, *args: Any) -> Any:
        if (other := await self.spare_for()) is not None:
            return await forward(other, name, args)
        return await method(self, *args)

    return cast(_M, served)


async def forward(other: Any, method: str, args: tuple[Any, ...]) -> Any:
    """Pass ``method(*args)`` on to ``other`` (the serving process's actor handle)."""
    return await asyncio.wait_for(other.forwarded.remote(method, args), FORWARD_TIMEOUT)


async def run_forwarded(actor: Any, method: str, args: tuple[Any, ...]) -> Any:
    """Run a call the other process passed on (a method of :data:`FORWARDABLE` only)."""
    if method not in FORWARDABLE:
        raise RelayError("invalid_request", f"{method!r} is not a connection actor call")
    token = _FORWARDED.set(True)
    try:
        return await getattr(actor, method)(*args)
    finally:
        _FORWARDED.reset(token)
