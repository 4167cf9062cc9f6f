"""Hold, denoise, echo, digit bindings, live transcription and user events."""

from __future__ import annotations

from typing import Any

from ..call_base import CallBase, _opts


class FeatureVerbs(CallBase):
    """Hold, denoise, echo, digit bindings, live transcription and user events."""

    __slots__ = ()

    async def hold(self) -> dict[str, Any]:
        """Put the call on hold (``calling.hold``)."""
        return await self._execute("hold")

    async def unhold(self) -> dict[str, Any]:
        """Take the call off hold (``calling.unhold``)."""
        return await self._execute("unhold")

    async def denoise(self) -> dict[str, Any]:
        """Start noise reduction on the call's audio (``calling.denoise``)."""
        return await self._execute("denoise")

    async def denoise_stop(self) -> dict[str, Any]:
        """Stop noise reduction (``calling.denoise.stop``)."""
        return await self._execute("denoise.stop")

    async def echo(
        self, *, timeout: float | None = None, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Echo the caller's audio back to them, for a test (``calling.echo``)."""
        return await self._execute("echo", {**_opts(timeout=timeout, status_url=status_url), **kw})

    async def bind_digit(
        self,
        digits: str,
        bind_method: str,
        *,
        bind_params: dict[str, Any] | None = None,
        realm: str | None = None,
        max_triggers: int | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Bind a DTMF sequence to a RELAY method run when the caller presses it (``calling.bind_digit``)."""
        params = {
            "digits": digits,
            "bind_method": bind_method,
            **_opts(params=bind_params, realm=realm, max_triggers=max_triggers),
            **kw,
        }
        return await self._execute("bind_digit", params)

    async def clear_digit_bindings(self, *, realm: str | None = None, **kw: Any) -> dict[str, Any]:
        """Remove the call's digit bindings, or those of one ``realm`` (``calling.clear_digit_bindings``)."""
        return await self._execute("clear_digit_bindings", {**_opts(realm=realm), **kw})

    async def live_transcribe(self, action: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Start or stop live transcription of the call, as ``action`` says (``calling.live_transcribe``)."""
        return await self._execute("live_transcribe", {"action": action, **kw})

    async def live_translate(
        self, action: dict[str, Any], *, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Start or stop live translation of the call, as ``action`` says (``calling.live_translate``)."""
        return await self._execute("live_translate", {"action": action, **_opts(status_url=status_url), **kw})

    async def user_event(self, *, event: Any = None, **kw: Any) -> dict[str, Any]:
        """Send a custom event with the call (``calling.user_event``)."""
        return await self._execute("user_event", {**_opts(event=event), **kw})
