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
    from .call_base import CallBase

__all__ = [
    "AIAction",
    "Action",
    "CollectAction",
    "DetectAction",
    "FaxAction",
    "PausableAction",
    "PayAction",
    "PlayAction",
    "RecordAction",
    "SendDigitsAction",
    "StandaloneCollectAction",
    "StoppableAction",
    "StreamAction",
    "TapAction",
    "TranscribeAction",
    "VolumeAction",
]

log = logging.getLogger("relay_actors.call")

OnCompleted = Callable[[RelayEvent], Any]


class Action:
    """A running operation on a call, named by ``control_id``."""

    # Slots for what every action has; ``__dict__`` so an app may add its own attributes,
    # as on the SDK's actions (it costs a pointer until one is set).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_future",
        "_on_completed",
        "call",
        "completed",
        "control_id",
        "result",
        "start_result",
    )

    #: Sub-command prefix: ``calling.<prefix>.stop`` etc.
    prefix = ""

    def __init__(self, call: CallBase, control_id: str, on_completed: OnCompleted | None = None) -> None:
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
        """True once the action finished (its terminal event came, or its call ended)."""
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


# The official SDK's family names, so ``isinstance`` checks written against it hold.
class StoppableAction(Action):
    """An action with only ``stop()``."""


class PausableAction(StoppableAction):
    """An action that also pauses and resumes (``<prefix>.pause``/``.resume``)."""

    async def pause(self, behavior: str | None = None) -> dict[str, Any]:
        """Pause. ``behavior`` (``skip``, the default, or ``silence``) is sent only
        when given: RELAY defines it for recordings."""
        return await self._sub("pause", behavior=behavior or None)

    async def resume(self) -> dict[str, Any]:
        """Resume after ``pause()``."""
        return await self._sub("resume")


class VolumeAction(PausableAction):
    """A pausable action whose volume can change (``<prefix>.volume``)."""

    async def volume(self, volume: float) -> dict[str, Any]:
        """Set the volume in dB (-40..+40)."""
        return await self._sub("volume", volume=volume)


class PlayAction(VolumeAction):
    """A ``play`` (``calling.play``): stop, pause, resume, volume."""
    prefix = "play"


class RecordAction(PausableAction):
    """A ``record`` (``calling.record``): stop, pause, resume; its ``url`` once done."""
    prefix = "record"

    @property
    def url(self) -> str:
        """The recording's URL: from the terminal event, else from the start result."""
        url = getattr(self.result, "url", "") if self.result is not None else ""
        return url or str(self.start_result.get("url") or "")


class CollectAction(StoppableAction):
    """``play_and_collect``: resolves on the collect result, not when the prompt ends.

    No ``pause``/``resume``: RELAY has no ``calling.play_and_collect.pause``
    (the official SDK inherits them and sends them anyway)."""

    prefix = "play_and_collect"

    async def volume(self, volume: float) -> dict[str, Any]:
        """Set the prompt's volume in dB (-40..+40)."""
        return await self._sub("volume", volume=volume)

    async def start_input_timers(self) -> dict[str, Any]:
        """Start the collect's input timers now (with ``start_input_timers=False`` at the start)."""
        return await self.call._execute("collect.start_input_timers", {"control_id": self.control_id})


class StandaloneCollectAction(StoppableAction):
    """A ``collect`` with no prompt (``calling.collect``)."""
    prefix = "collect"

    async def start_input_timers(self) -> dict[str, Any]:
        """Start the collect's input timers now (with ``start_input_timers=False`` at the start)."""
        return await self._sub("start_input_timers")


class DetectAction(StoppableAction):
    """A ``detect`` (``calling.detect``): answering machine, fax tone or digits."""
    prefix = "detect"


class TapAction(StoppableAction):
    """A ``tap`` (``calling.tap``): the call's media copied to a device."""
    prefix = "tap"


class StreamAction(StoppableAction):
    """A ``stream`` (``calling.stream``): the call's audio sent to a WebSocket."""
    prefix = "stream"


class PayAction(StoppableAction):
    """A ``pay`` (``calling.pay``): a card payment."""
    prefix = "pay"


class TranscribeAction(StoppableAction):
    """A ``transcribe`` (``calling.transcribe``)."""
    prefix = "transcribe"


class AIAction(StoppableAction):
    """An AI agent session (``calling.ai``)."""
    prefix = "ai"


class SendDigitsAction(StoppableAction):
    """A ``send_digits`` (``calling.send_digits``)."""
    prefix = "send_digits"


class FaxAction(StoppableAction):
    """``send_fax`` or ``receive_fax``; ``stop`` sends the matching ``.stop``."""

    def __init__(
        self, call: CallBase, control_id: str, on_completed: OnCompleted | None, prefix: str
    ) -> None:
        super().__init__(call, control_id, on_completed)
        self.prefix = prefix
