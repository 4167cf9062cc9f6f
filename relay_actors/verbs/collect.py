"""Prompts and digit/speech collection (``calling.play_and_collect``, ``calling.collect``)."""

from __future__ import annotations

from typing import Any

from ..action import (
    CollectAction,
    OnCompleted,
    StandaloneCollectAction,
)
from ..call_base import CallBase, _media_list, _opts
from ..errors import ArgumentError


class CollectVerbs(CallBase):
    """Prompts and digit/speech collection (``calling.play_and_collect``, ``calling.collect``)."""

    __slots__ = ()

    async def play_and_collect(
        self,
        media: list[dict[str, Any]],
        collect: dict[str, Any],
        *,
        volume: float | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> CollectAction:
        """Play a prompt and collect digits or speech; resolves on the collect result."""
        if not isinstance(collect, dict) or not ("digits" in collect or "speech" in collect):
            raise ArgumentError('collect must be an object with "digits" and/or "speech"')
        params = {"play": _media_list(media), "collect": collect, **_opts(volume=volume), **kw}
        return await self._start(
            "play_and_collect", params, control_id, on_completed, lambda cid: CollectAction(self, cid)
        )

    async def prompt_tts(
        self,
        text: str,
        collect: dict[str, Any],
        *,
        language: str | None = None,
        gender: str | None = None,
        voice: str | None = None,
        volume: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> CollectAction:
        """Say ``text`` and collect digits or speech (``play_and_collect`` with a TTS prompt)."""
        media = {
            "type": "tts",
            "params": {"text": text, **_opts(language=language, gender=gender, voice=voice)},
        }
        return await self.play_and_collect([media], collect, volume=volume, on_completed=on_completed, **kw)

    async def prompt_audio(
        self,
        url: str,
        collect: dict[str, Any],
        *,
        volume: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> CollectAction:
        """Play the audio at ``url`` and collect digits or speech (``play_and_collect``)."""
        media = {"type": "audio", "params": {"url": url}}
        return await self.play_and_collect([media], collect, volume=volume, on_completed=on_completed, **kw)

    async def collect(
        self,
        *,
        digits: dict[str, Any] | None = None,
        speech: dict[str, Any] | None = None,
        initial_timeout: float | None = None,
        partial_results: bool | None = None,
        continuous: bool | None = None,
        send_start_of_input: bool | None = None,
        start_input_timers: bool | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> StandaloneCollectAction:
        """Collect digits or speech without a prompt. With ``partial_results`` the
        action resolves on the final result, not the first partial one."""
        if digits is None and speech is None:
            raise ArgumentError("collect needs digits=... and/or speech=...")
        params = {
            **_opts(
                digits=digits,
                speech=speech,
                initial_timeout=initial_timeout,
                partial_results=partial_results,
                continuous=continuous,
                send_start_of_input=send_start_of_input,
                start_input_timers=start_input_timers,
            ),
            **kw,
        }
        return await self._start(
            "collect", params, control_id, on_completed, lambda cid: StandaloneCollectAction(self, cid)
        )
