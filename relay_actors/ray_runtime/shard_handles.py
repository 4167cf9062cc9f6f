"""A shard's Ray handle as its callers hold it: the main seat, and with a warm standby
(:mod:`~relay_actors.ray_runtime.shard_standby`) the standby seat too.

Either seat answers every call: the one that does not serve passes it on to the one that
does. But while Ray restarts the main seat's process (~1 s after a kill, during which the
standby already serves), a call to it waits for the restart (or fails with Ray's
``ActorUnavailableError``): the reads below then ask the standby seat as well, and take
the first answer. Other calls are not sent twice (one
that failed may have run), so they fail as they did without a standby, and their callers
retry as they do across any restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from .actor_messages import NAMESPACE, actor_name

__all__ = ["ShardHandle", "shard_handle"]

#: Calls that only read: asked of the standby seat too when the main seat is unavailable.
READS = frozenset({"ready", "stats", "session_info", "lease_state"})
#: Seconds a read waits for the main seat before asking the standby seat as well (a call
#: to an actor that Ray is restarting waits for the restart, ~1 s).
ASK_STANDBY_AFTER = 0.25
#: Seconds before a standby seat found missing is looked up again (it may be created
#: after the handle, with the app; most apps have none).
LOOKUP_AGAIN_AFTER = 30.0


class _Method:
    __slots__ = ("_handle", "_name")

    def __init__(self, handle: ShardHandle, name: str) -> None:
        self._handle = handle
        self._name = name

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self._handle.call(self._name, *args)


class ShardHandle:
    """Call a shard's Ray methods as on an actor handle (``handle.stats.remote()``, to be
    awaited), through its main seat, reads falling back to its standby seat (looked up
    by name when first needed: it may be created after this handle)."""

    def __init__(self, app: str, shard: int, main: Any, standby: Any = None) -> None:
        self.app = app
        self.shard = shard
        self.main = main
        self.standby = standby
        self._next_lookup = 0.0

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    async def call(self, method: str, *args: Any) -> Any:
        if method not in READS:
            return await getattr(self.main, method).remote(*args)
        from ray.exceptions import RayActorError

        main = asyncio.ensure_future(getattr(self.main, method).remote(*args))
        done, _ = await asyncio.wait({main}, timeout=ASK_STANDBY_AFTER)
        if main in done and not isinstance(main.exception(), RayActorError):
            return main.result()
        standby = self._standby()
        if standby is None:
            return await main
        pending = {main, asyncio.ensure_future(getattr(standby, method).remote(*args))}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for ask in done:
                    if ask.exception() is None:
                        return ask.result()
                    error = ask.exception()
        finally:
            for ask in pending:
                ask.cancel()
        assert error is not None
        raise error

    def kill(self) -> None:
        """Kill the shard's processes, both seats' (Ray restarts them; one claims the next
        term and serves, the other is its spare): the one whose start-up failed may be either."""
        import ray

        ray.kill(self.main, no_restart=False)
        standby = self._standby()
        if standby is not None:
            ray.kill(standby, no_restart=False)

    def _standby(self) -> Any:
        if self.standby is None:
            import ray

            now = time.monotonic()
            if now < self._next_lookup:
                return None  # (an app without a standby: not looked up on every slow read)
            self._next_lookup = now + LOOKUP_AGAIN_AFTER
            try:
                self.standby = ray.get_actor(actor_name(self.app, "standby", self.shard), namespace=NAMESPACE)
            except ValueError:  # no standby (or not created yet)
                return None
        return self.standby


def shard_handle(app: str, shard: int) -> ShardHandle:
    """Shard ``shard`` of ``app`` by name (raises ``ValueError`` if its main seat does not exist)."""
    import ray

    return ShardHandle(app, shard, ray.get_actor(actor_name(app, "connection", shard), namespace=NAMESPACE))
