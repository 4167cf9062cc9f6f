"""Action handles: what ``call.play(...)``, ``call.record(...)`` and friends return.

An action finishes in one of three ways a user picks: ``await action.wait()``,
fire-and-forget, or an ``on_completed`` callback (plain or async). It also
finishes, with the ``ended`` event, when its call ends, and at once, with an
empty event, when its call is already gone (404/410), so nobody waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .protocol.events import RelayEvent

if TYPE_CHECKING:
    from .call import Call

__all__ = [
    "AIAction",
    "Action",
    "CollectAction",
    "DetectAction",
    "FaxAction",
    "PayAction",
    "PlayAction",
    "RecordAction",
    "SendDigitsAction",
    "StandaloneCollectAction",
    "StreamAction",
    "TapAction",
    "TranscribeAction",
]

log = logging.getLogger("relay_actors.call")

OnCompleted = Callable[[RelayEvent], Any]


class Action:
    """A running operation on a call, named by ``control_id``."""

    #: Sub-command prefix: ``calling.<prefix>.stop`` etc.
    prefix = ""

    def __init__(self, call: Call, control_id: str, on_completed: OnCompleted | None = None) -> None:
        self.call = call
        self.control_id = control_id
        self.result: RelayEvent | None = None
        self.completed = False
        #: The start request's result (``{}`` when the call was already gone).
        self.start_result: dict[str, Any] = {}
        self._on_completed = on_completed
        self._future: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        state = "done" if self.completed else "running"
        return f"<{type(self).__name__} {self.control_id} on {self.call.call_id} {state}>"

    @property
    def is_done(self) -> bool:
        return self._future.done()

    async def wait(self, timeout: float | None = None) -> RelayEvent:
        """The terminal event. A timeout raises ``asyncio.TimeoutError`` and leaves the
        action running: a later ``wait()`` still works."""
        return await asyncio.wait_for(asyncio.shield(self._future), timeout)

    def _resolve(self, event: RelayEvent) -> None:
        if self._future.done():
            return
        self.result = event
        self.completed = True
        self._future.set_result(event)
        if self._on_completed is not None:
            self.call._fire(self._on_completed, event, f"on_completed of {self.control_id}")

    def _fail(self, exc: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
            # Whoever started the action got the exception already; don't warn if nobody waits.
            self._future.add_done_callback(lambda f: f.exception())

    async def _sub(self, command: str, **params: Any) -> dict[str, Any]:
        extra = {k: v for k, v in params.items() if v is not None}
        return await self.call._execute(f"{self.prefix}.{command}", {"control_id": self.control_id, **extra})

    async def stop(self) -> dict[str, Any]:
        """Stop the operation (``calling.<verb>.stop``)."""
        return await self._sub("stop")


class PlayAction(Action):
    prefix = "play"

    async def pause(self) -> dict[str, Any]:
        return await self._sub("pause")

    async def resume(self) -> dict[str, Any]:
        return await self._sub("resume")

    async def volume(self, volume: float) -> dict[str, Any]:
        """Set the playback volume in dB (-40..+40)."""
        return await self._sub("volume", volume=volume)


class RecordAction(Action):
    prefix = "record"

    async def pause(self, behavior: str | None = None) -> dict[str, Any]:
        """Pause; ``behavior`` is ``skip`` (default) or ``silence``."""
        return await self._sub("pause", behavior=behavior)

    async def resume(self) -> dict[str, Any]:
        return await self._sub("resume")

    @property
    def url(self) -> str:
        """The recording's URL: from the terminal event, else from the start result."""
        url = getattr(self.result, "url", "") if self.result is not None else ""
        return url or str(self.start_result.get("url") or "")


class CollectAction(Action):
    """``play_and_collect``: resolves on the collect result, not when the prompt ends."""

    prefix = "play_and_collect"

    async def volume(self, volume: float) -> dict[str, Any]:
        return await self._sub("volume", volume=volume)

    async def start_input_timers(self) -> dict[str, Any]:
        return await self.call._execute("collect.start_input_timers", {"control_id": self.control_id})


class StandaloneCollectAction(Action):
    prefix = "collect"

    async def start_input_timers(self) -> dict[str, Any]:
        return await self._sub("start_input_timers")


class DetectAction(Action):
    prefix = "detect"


class TapAction(Action):
    prefix = "tap"


class StreamAction(Action):
    prefix = "stream"


class PayAction(Action):
    prefix = "pay"


class TranscribeAction(Action):
    prefix = "transcribe"


class AIAction(Action):
    prefix = "ai"


class SendDigitsAction(Action):
    prefix = "send_digits"


class FaxAction(Action):
    """``send_fax`` or ``receive_fax``; ``stop`` sends the matching ``.stop``."""

    def __init__(self, call: Call, control_id: str, on_completed: OnCompleted | None, prefix: str) -> None:
        super().__init__(call, control_id, on_completed)
        self.prefix = prefix
