"""``Message``: an SMS/MMS, inbound (from ``on_message``) or outbound (from ``send_message``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .protocol.events import RelayEvent
from .protocol.messages import MessageTracker
from .tasks import BackgroundTasks, call_handler

__all__ = ["Message"]


class Message:
    """One message. Outbound messages track delivery: ``state`` moves through
    ``queued → initiated → sent → delivered`` (or ``undelivered``/``failed`` with
    ``reason``); ``await message.wait()`` returns the terminal event."""

    def __init__(
        self,
        *,
        message_id: str = "",
        context: str = "",
        direction: str = "outbound",
        from_number: str = "",
        to_number: str = "",
        body: str = "",
        media: list[str] | None = None,
        segments: int = 0,
        state: str = "queued",
        reason: str = "",
        tags: list[str] | None = None,
        on_completed: Callable[[RelayEvent], Any] | None = None,
    ) -> None:
        self.message_id = message_id
        self.context = context
        self.direction = direction
        self.from_number = from_number
        self.to_number = to_number
        self.body = body
        self.media = list(media or [])
        self.segments = segments
        self.state = state
        self.reason = reason
        self.tags = list(tags or [])
        self.result: RelayEvent | None = None
        self._on_completed = on_completed
        self._listeners: list[Callable[[RelayEvent], Any]] = []
        self._future: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
        self._tasks = BackgroundTasks()

    @classmethod
    def from_event(cls, params: dict[str, Any]) -> Message:
        """An inbound message from ``messaging.receive`` params."""
        media = params.get("media")
        tags = params.get("tags")
        segments = params.get("segments")
        return cls(
            message_id=str(params.get("message_id") or ""),
            context=str(params.get("context") or ""),
            direction=str(params.get("direction") or "inbound"),
            from_number=str(params.get("from_number") or ""),
            to_number=str(params.get("to_number") or ""),
            body=str(params.get("body") or ""),
            media=media if isinstance(media, list) else [],
            segments=segments if isinstance(segments, int) else 0,
            state=str(params.get("message_state") or "received"),
            tags=tags if isinstance(tags, list) else [],
        )

    def __repr__(self) -> str:
        return f"<Message {self.message_id} {self.direction} {self.state}>"

    @property
    def is_done(self) -> bool:
        return self._future.done()

    def on(self, handler: Callable[[RelayEvent], Any]) -> None:
        """Call ``handler`` (plain or async) with every state event."""
        self._listeners.append(handler)

    async def wait(self, timeout: float | None = None) -> RelayEvent:
        """The terminal state event; a timeout does not stop tracking. Raises
        ``RelayError`` (``session_lost``, ``closed``) if tracking ends without one."""
        return await asyncio.wait_for(asyncio.shield(self._future), timeout)

    def _track(self, tracker: MessageTracker) -> bool:
        """The send result arrived: register with ``tracker`` and apply the state events
        that beat it. Returns True while the message still awaits a terminal state."""
        record, applied = tracker.sent(self.message_id)
        for event in applied:
            self._apply(event, record.state, record.reason, record.done and event is record.result)
        return not record.done

    def _apply(self, event: RelayEvent, state: str, reason: str, finished: bool) -> None:
        self.state = state
        if reason:
            self.reason = reason
        for handler in list(self._listeners):
            self._fire(handler, event)
        if finished and not self._future.done():
            self.result = event
            self._future.set_result(event)
            if self._on_completed is not None:
                self._fire(self._on_completed, event)

    def _fail(self, exc: BaseException) -> None:
        """Tracking ended without a terminal state (session lost, client closed)."""
        self._listeners.clear()
        if not self._future.done():
            self._future.set_exception(exc)
            self._future.add_done_callback(lambda f: f.exception())  # nobody may be waiting

    def _fire(self, handler: Callable[[RelayEvent], Any], event: RelayEvent) -> None:
        call_handler(self._tasks, handler, event, what=f"message handler of {self.message_id}")
