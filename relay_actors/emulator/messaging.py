"""Messaging: ``messaging.send`` with its state progression, and injected inbound messages."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from ..protocol import constants as c
from .rpc import InvalidParams, require, result

if TYPE_CHECKING:
    from .core import EmulatorCore
    from .session import Session

__all__ = ["MessagingService"]

_REASONS = {"undelivered": "Destination unreachable", "failed": "Carrier rejected the message"}


class MessagingService:
    """Outbound message states and inbound message delivery."""

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core
        self.sent = 0
        self.received = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _states(self, to_number: str) -> list[str]:
        cfg = self.core.config
        outcome = cfg.message_outcomes.get(to_number, cfg.default_message_outcome)
        if outcome == c.MESSAGE_STATE_DELIVERED:
            return [c.MESSAGE_STATE_QUEUED, c.MESSAGE_STATE_INITIATED, c.MESSAGE_STATE_SENT, outcome]
        return [c.MESSAGE_STATE_QUEUED, c.MESSAGE_STATE_INITIATED, outcome]

    def _emit_state(self, message: dict[str, Any], state: str) -> None:
        params = {**message, "message_state": state}
        if state in _REASONS:
            params["reason"] = _REASONS[state]
        for session in self.core.subscribers(message["context"]):
            session.emit(c.EVENT_MESSAGING_STATE, params)

    async def _progress(self, message: dict[str, Any], states: list[str]) -> None:
        step = self.core.config.duration("message")
        for state in states:
            await asyncio.sleep(step)
            self._emit_state(message, state)

    def send(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        """Answer ``messaging.send``; states follow (or precede, if so configured)."""
        require(params, "context", "to_number", "from_number")
        body, media = params.get("body"), params.get("media")
        if not body and not media:
            raise InvalidParams("one of 'body' or 'media' is required")
        message_id = str(uuid.uuid4())
        media_list = media if isinstance(media, list) else []
        message = {
            "message_id": message_id,
            "context": str(params["context"]),
            "direction": "outbound",
            "from_number": params["from_number"],
            "to_number": params["to_number"],
            "body": body or "",
            "media": media_list,
            "segments": max(1, len(str(body or "")) // 160 + 1) if body else 1,
            "tags": params.get("tags") or [],
        }
        self.sent += 1
        states = self._states(str(params["to_number"]))
        if self.core.config.message_states_before_result:
            for state in states:
                self._emit_state(message, state)
        else:
            task = asyncio.get_running_loop().create_task(self._progress(message, states))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return result("200", "Message accepted", message_id=message_id)

    def inject(
        self,
        context: str,
        *,
        from_number: str = "+15551230001",
        to_number: str = "+15557650002",
        body: str = "Hello from the emulator",
        media: list[str] | None = None,
        tags: list[str] | None = None,
    ) -> str | None:
        """Deliver an inbound ``messaging.receive`` to the next subscriber of ``context``.

        Returns the message id, or None when nobody receives the context.
        """
        session = self.core.next_subscriber(context)
        if session is None:
            return None
        message_id = str(uuid.uuid4())
        session.emit(
            c.EVENT_MESSAGING_RECEIVE,
            {
                "message_id": message_id,
                "context": context,
                "direction": "inbound",
                "from_number": from_number,
                "to_number": to_number,
                "body": body,
                "media": media or [],
                "segments": 1,
                "message_state": c.MESSAGE_STATE_RECEIVED,
                "tags": tags or [],
            },
        )
        self.received += 1
        return message_id
