"""Record the call (``calling.record``)."""

from __future__ import annotations

from typing import Any

from ..action import OnCompleted, RecordAction
from ..call_base import CallBase


class RecordVerbs(CallBase):
    """Record the call (``calling.record``)."""

    __slots__ = ()

    async def record(
        self,
        audio: dict[str, Any] | None = None,
        *,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> RecordAction:
        """Record the call; ``audio`` holds beep, format, stereo, direction, timeouts, terminators."""
        params = {"record": {"audio": audio or {}}, **kw}
        return await self._start(
            "record", params, control_id, on_completed, lambda cid: RecordAction(self, cid)
        )
