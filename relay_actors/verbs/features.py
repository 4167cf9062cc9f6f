"""Hold, denoise, echo, digit bindings, live transcription and user events."""

from __future__ import annotations

from typing import Any

from ..call_base import CallBase, _opts


class FeatureVerbs(CallBase):
    """Hold, denoise, echo, digit bindings, live transcription and user events."""

    __slots__ = ()

    async def hold(self) -> dict[str, Any]:
        return await self._execute("hold")

    async def unhold(self) -> dict[str, Any]:
        return await self._execute("unhold")

    async def denoise(self) -> dict[str, Any]:
        return await self._execute("denoise")

    async def denoise_stop(self) -> dict[str, Any]:
        return await self._execute("denoise.stop")

    async def echo(
        self, *, timeout: float | None = None, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
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
        params = {
            "digits": digits,
            "bind_method": bind_method,
            **_opts(params=bind_params, realm=realm, max_triggers=max_triggers),
            **kw,
        }
        return await self._execute("bind_digit", params)

    async def clear_digit_bindings(self, *, realm: str | None = None, **kw: Any) -> dict[str, Any]:
        return await self._execute("clear_digit_bindings", {**_opts(realm=realm), **kw})

    async def live_transcribe(self, action: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self._execute("live_transcribe", {"action": action, **kw})

    async def live_translate(
        self, action: dict[str, Any], *, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self._execute("live_translate", {"action": action, **_opts(status_url=status_url), **kw})

    async def user_event(self, *, event: Any = None, **kw: Any) -> dict[str, Any]:
        return await self._execute("user_event", {**_opts(event=event), **kw})
