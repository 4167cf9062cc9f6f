"""Connecting, transferring and sending digits."""

from __future__ import annotations

from typing import Any

from ..action import OnCompleted, SendDigitsAction
from ..call_base import CallBase, _device_lists, _media_list, _opts
from ..errors import ArgumentError


class BridgingVerbs(CallBase):
    """Connecting, transferring and sending digits."""

    __slots__ = ()

    async def connect(
        self,
        devices: Any,
        *,
        ringback: list[dict[str, Any]] | None = None,
        tag: str | None = None,
        max_duration: int | None = None,
        max_price_per_minute: float | None = None,
        status_url: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Bridge this call to devices (outer list in series, inner lists in parallel)."""
        params = {
            "devices": _device_lists(devices),
            **_opts(
                ringback=_media_list(ringback) if ringback is not None else None,
                tag=tag,
                max_duration=max_duration,
                max_price_per_minute=max_price_per_minute,
                status_url=status_url,
            ),
            **kw,
        }
        return await self._execute("connect", params)

    async def disconnect(self) -> dict[str, Any]:
        """Unbridge a connected call (nobody hangs up)."""
        return await self._execute("disconnect")

    async def send_digits(
        self, digits: str, *, control_id: str | None = None, on_completed: OnCompleted | None = None
    ) -> dict[str, Any]:
        """Send DTMF (``0-9 # * A-D``, ``w``/``W`` pauses). Returns the result dict;
        ``on_completed`` fires on the ``finished`` event."""
        if not isinstance(digits, str) or not digits or any(ch not in "0123456789#*ABCDwW" for ch in digits):
            raise ArgumentError(f"digits must be made of 0-9 # * A-D w W, not {digits!r}")
        action = await self._start(
            "send_digits",
            {"digits": digits},
            control_id,
            on_completed,
            lambda cid: SendDigitsAction(self, cid),
        )
        return action.start_result

    async def refer(
        self, device: dict[str, Any], *, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Transfer the call with a SIP REFER to ``device`` (``calling.refer``)."""
        return await self._execute("refer", {"device": device, **_opts(status_url=status_url), **kw})

    async def transfer(self, dest: str, **kw: Any) -> dict[str, Any]:
        """Hand the call to SWML (URL or inline) or to ``context:<name>``."""
        return await self._execute("transfer", {"dest": dest, **kw})
