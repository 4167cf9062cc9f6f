"""Play audio, speech, silence and ringtones (``calling.play``)."""

from __future__ import annotations

from typing import Any

from ..action import OnCompleted, PlayAction
from ..call_base import CallBase, _media_list, _opts
from ..errors import ArgumentError


class PlayVerbs(CallBase):
    """Play audio, speech, silence and ringtones (``calling.play``)."""

    __slots__ = ()

    async def play(
        self,
        media: list[dict[str, Any]],
        *,
        volume: float | None = None,
        direction: str | None = None,
        loop: int | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> PlayAction:
        """Play a list of media (audio, tts, silence, ringtone)."""
        params = {"play": _media_list(media), **_opts(volume=volume, direction=direction, loop=loop), **kw}
        return await self._start("play", params, control_id, on_completed, lambda cid: PlayAction(self, cid))

    async def play_tts(
        self,
        text: str,
        *,
        language: str | None = None,
        gender: str | None = None,
        voice: str | None = None,
        volume: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> PlayAction:
        """Say ``text`` with text-to-speech; returns a ``PlayAction``."""
        if not isinstance(text, str) or not text:
            raise ArgumentError("play_tts needs a non-empty text")
        media = {
            "type": "tts",
            "params": {"text": text, **_opts(language=language, gender=gender, voice=voice)},
        }
        return await self.play([media], volume=volume, on_completed=on_completed, **kw)

    async def play_audio(
        self, url: str, *, volume: float | None = None, on_completed: OnCompleted | None = None, **kw: Any
    ) -> PlayAction:
        """Play the audio file at ``url``; returns a ``PlayAction``."""
        return await self.play(
            [{"type": "audio", "params": {"url": url}}], volume=volume, on_completed=on_completed, **kw
        )

    async def play_silence(
        self, duration: float, *, on_completed: OnCompleted | None = None, **kw: Any
    ) -> PlayAction:
        """Play ``duration`` seconds of silence; returns a ``PlayAction``."""
        return await self.play(
            [{"type": "silence", "params": {"duration": duration}}], on_completed=on_completed, **kw
        )

    async def play_ringtone(
        self,
        name: str,
        *,
        duration: float | None = None,
        volume: float | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> PlayAction:
        """Play a ringtone (``name``: a country code such as ``us``); returns a ``PlayAction``."""
        media = {"type": "ringtone", "params": {"name": name, **_opts(duration=duration)}}
        return await self.play([media], volume=volume, on_completed=on_completed, **kw)
