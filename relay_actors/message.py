"""``Message``: an SMS/MMS, inbound (from ``on_message``) or outbound (from ``send_message``)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .protocol.events import RelayEvent
from .protocol.messages import MessageTracker
from .tasks import BackgroundTasks, call_handler

__all__ = ["Message"]

log = logging.getLogger("relay_actors")


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
        #: State events not yet shown to every listener, oldest first (bounded by the
        #: handful of states a message has), and the task awaiting an async listener.
        self._backlog: deque[tuple[RelayEvent, bool]] = deque(maxlen=64)
        self._draining: asyncio.Task[Any] | None = None

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
        """True once the message reached a terminal state (delivered, undelivered or failed)."""
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
        self._backlog.append((event, finished))
        if self._draining is None:
            self._drain()

    # As in the SDK, an async listener is awaited: it has finished before the next state
    # event reaches the listeners, before ``on_completed`` and before ``wait()`` returns
    # (a listener that stores the state can count on it). Unlike the SDK, it does not
    # block the socket's other events meanwhile: it is awaited in a task of this message.

    def _drain(self) -> None:
        """Show the queued events to the listeners in order, then complete on a terminal one;
        an async listener hands the rest over to :meth:`_drain_after`."""
        while self._backlog:
            event, finished = self._backlog[0]
            listeners = list(self._listeners)
            for index, handler in enumerate(listeners):
                pending = self._listen(handler, event)
                if pending is not None:
                    self._draining = self._tasks.spawn(
                        self._drain_after(pending, listeners[index + 1 :]),
                        what=f"message listener of {self.message_id}",
                    )
                    return
            self._backlog.popleft()
            if finished:
                self._complete(event)

    async def _drain_after(
        self, pending: Coroutine[Any, Any, Any], rest: list[Callable[[RelayEvent], Any]]
    ) -> None:
        event, finished = self._backlog[0]
        try:
            await self._await_listener(pending)
            for handler in rest:
                more = self._listen(handler, event)
                if more is not None:
                    await self._await_listener(more)
            self._backlog.popleft()
            if finished:
                self._complete(event)
        finally:
            self._draining = None
        self._drain()

    def _listen(
        self, handler: Callable[[RelayEvent], Any], event: RelayEvent
    ) -> Coroutine[Any, Any, Any] | None:
        """Call a listener; its coroutine if it is async. Exceptions are logged."""
        try:
            result = handler(event)
        except Exception:
            log.exception("message listener of %s failed", self.message_id)
            return None
        return result if asyncio.iscoroutine(result) else None

    async def _await_listener(self, pending: Coroutine[Any, Any, Any]) -> None:
        try:
            await pending
        except Exception:
            log.exception("message listener of %s failed", self.message_id)

    def _complete(self, event: RelayEvent) -> None:
        if not self._future.done():
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
