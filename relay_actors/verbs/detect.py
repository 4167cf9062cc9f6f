"""Answering-machine, fax and digit detection (``calling.detect``)."""

from __future__ import annotations

from typing import Any

from ..action import DetectAction, OnCompleted
from ..call_base import CallBase, _opts
from ..errors import ArgumentError


class DetectVerbs(CallBase):
    """Answering-machine, fax and digit detection (``calling.detect``)."""

    __slots__ = ()

    async def detect(
        self,
        detect: dict[str, Any],
        *,
        timeout: float | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> DetectAction:
        """Detect a machine, fax tone or digits; resolves on the first result."""
        if not isinstance(detect, dict) or detect.get("type") not in ("machine", "fax", "digit"):
            raise ArgumentError('detect must be {"type": "machine"|"fax"|"digit", "params": {...}}')
        params = {"detect": detect, **_opts(timeout=timeout), **kw}
        return await self._start(
            "detect", params, control_id, on_completed, lambda cid: DetectAction(self, cid)
        )

    async def detect_answering_machine(
        self,
        *,
        initial_timeout: float | None = None,
        end_silence_timeout: float | None = None,
        machine_voice_threshold: float | None = None,
        machine_words_threshold: int | None = None,
        detect_interruptions: bool | None = None,
        detect_message_end: bool | None = None,
        timeout: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> DetectAction:
        """Detect whether a person or a machine answered (``calling.detect`` of type ``machine``)."""
        params = _opts(
            initial_timeout=initial_timeout,
            end_silence_timeout=end_silence_timeout,
            machine_voice_threshold=machine_voice_threshold,
            machine_words_threshold=machine_words_threshold,
            detect_interruptions=detect_interruptions,
            detect_message_end=detect_message_end,
        )
        return await self.detect(
            {"type": "machine", "params": params}, timeout=timeout, on_completed=on_completed, **kw
        )

    async def detect_fax(
        self,
        *,
        tone: str | None = None,
        timeout: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> DetectAction:
        """Detect a fax tone (``CED`` or ``CNG``) on the call (``calling.detect`` of type ``fax``)."""
        return await self.detect(
            {"type": "fax", "params": _opts(tone=tone)}, timeout=timeout, on_completed=on_completed, **kw
        )

    async def detect_digit(
        self,
        *,
        digits: str | None = None,
        timeout: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> DetectAction:
        """Detect the given DTMF digits on the call (``calling.detect`` of type ``digit``)."""
        return await self.detect(
            {"type": "digit", "params": _opts(digits=digits)},
            timeout=timeout,
            on_completed=on_completed,
            **kw,
        )
