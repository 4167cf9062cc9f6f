"""Conferences, rooms and queues."""

from __future__ import annotations

import uuid
from typing import Any

from ..call_base import CallBase, _opts


class RoomVerbs(CallBase):
    """Conferences, rooms and queues."""

    __slots__ = ()

    async def join_conference(
        self,
        name: str,
        *,
        muted: bool | None = None,
        beep: Any = None,
        start_on_enter: bool | None = None,
        end_on_exit: bool | None = None,
        wait_url: str | None = None,
        max_participants: int | None = None,
        record: str | None = None,
        region: str | None = None,
        trim: str | None = None,
        coach: str | None = None,
        status_callback: str | None = None,
        status_callback_event: str | None = None,
        status_callback_event_type: str | None = None,
        status_callback_method: str | None = None,
        recording_status_callback: str | None = None,
        recording_status_callback_event: str | None = None,
        recording_status_callback_event_type: str | None = None,
        recording_status_callback_method: str | None = None,
        stream_obj: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Join the conference ``name``, creating it if needed (``calling.join_conference``)."""
        params = {
            "name": name,
            **_opts(
                muted=muted,
                beep=beep,
                start_on_enter=start_on_enter,
                end_on_exit=end_on_exit,
                wait_url=wait_url,
                max_participants=max_participants,
                record=record,
                region=region,
                trim=trim,
                coach=coach,
                status_callback=status_callback,
                status_callback_event=status_callback_event,
                status_callback_event_type=status_callback_event_type,
                status_callback_method=status_callback_method,
                recording_status_callback=recording_status_callback,
                recording_status_callback_event=recording_status_callback_event,
                recording_status_callback_event_type=recording_status_callback_event_type,
                recording_status_callback_method=recording_status_callback_method,
                stream=stream_obj,
            ),
            **kw,
        }
        return await self._execute("join_conference", params)

    async def leave_conference(self, conference_id: str, **kw: Any) -> dict[str, Any]:
        """Leave the conference ``conference_id`` (``calling.leave_conference``)."""
        return await self._execute("leave_conference", {"conference_id": conference_id, **kw})

    async def join_room(self, name: str, *, status_url: str | None = None, **kw: Any) -> dict[str, Any]:
        """Join the video room ``name`` (``calling.join_room``)."""
        return await self._execute("join_room", {"name": name, **_opts(status_url=status_url), **kw})

    async def leave_room(self, **kw: Any) -> dict[str, Any]:
        """Leave the video room (``calling.leave_room``)."""
        return await self._execute("leave_room", kw)

    async def queue_enter(
        self, queue_name: str, *, control_id: str | None = None, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Put the call in the queue ``queue_name`` (``calling.queue.enter``)."""
        params = {
            "control_id": control_id or str(uuid.uuid4()),
            "queue_name": queue_name,
            **_opts(status_url=status_url),
        }
        return await self._execute("queue.enter", {**params, **kw})

    async def queue_leave(
        self,
        queue_name: str,
        *,
        control_id: str | None = None,
        queue_id: str | None = None,
        status_url: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Take the call out of the queue ``queue_name`` (``calling.queue.leave``)."""
        params = {
            "control_id": control_id or str(uuid.uuid4()),
            "queue_name": queue_name,
            **_opts(queue_id=queue_id, status_url=status_url),
        }
        return await self._execute("queue.leave", {**params, **kw})
