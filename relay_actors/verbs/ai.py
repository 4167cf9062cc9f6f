"""The AI agent (``calling.ai``) and its helpers."""

from __future__ import annotations

from typing import Any

from ..action import AIAction, OnCompleted
from ..call_base import CallBase, _opts


class AIVerbs(CallBase):
    """The AI agent (``calling.ai``) and its helpers."""

    __slots__ = ()

    async def ai(
        self,
        *,
        agent: str | None = None,
        prompt: dict[str, Any] | None = None,
        post_prompt: dict[str, Any] | None = None,
        post_prompt_url: str | None = None,
        post_prompt_auth_user: str | None = None,
        post_prompt_auth_password: str | None = None,
        global_data: dict[str, Any] | None = None,
        pronounce: list[dict[str, Any]] | None = None,
        hints: list[str] | None = None,
        languages: list[dict[str, Any]] | None = None,
        SWAIG: dict[str, Any] | None = None,
        ai_params: dict[str, Any] | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> AIAction:
        """Start a SignalWire AI agent on the call (``calling.ai``); returns an ``AIAction``."""
        params = {
            **_opts(
                agent=agent,
                prompt=prompt,
                post_prompt=post_prompt,
                post_prompt_url=post_prompt_url,
                post_prompt_auth_user=post_prompt_auth_user,
                post_prompt_auth_password=post_prompt_auth_password,
                global_data=global_data,
                pronounce=pronounce,
                hints=hints,
                languages=languages,
                SWAIG=SWAIG,
                params=ai_params,
            ),
            **kw,
        }
        return await self._start("ai", params, control_id, on_completed, lambda cid: AIAction(self, cid))

    async def amazon_bedrock(
        self,
        *,
        prompt: Any = None,
        SWAIG: dict[str, Any] | None = None,
        ai_params: dict[str, Any] | None = None,
        global_data: dict[str, Any] | None = None,
        post_prompt: Any = None,
        post_prompt_url: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Start an Amazon Bedrock agent on the call (``calling.amazon_bedrock``)."""
        params = _opts(
            prompt=prompt,
            SWAIG=SWAIG,
            params=ai_params,
            global_data=global_data,
            post_prompt=post_prompt,
            post_prompt_url=post_prompt_url,
        )
        return await self._execute("amazon_bedrock", {**params, **kw})

    async def ai_message(
        self,
        *,
        message_text: str | None = None,
        role: str | None = None,
        reset: dict[str, Any] | None = None,
        global_data: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Send a message into the running AI agent's conversation (``calling.ai_message``)."""
        params = _opts(message_text=message_text, role=role, reset=reset, global_data=global_data)
        return await self._execute("ai_message", {**params, **kw})

    async def ai_hold(self, *, timeout: Any = None, prompt: Any = None, **kw: Any) -> dict[str, Any]:
        """Put the AI agent's caller on hold, optionally with a prompt and a timeout (``calling.ai_hold``)."""
        return await self._execute("ai_hold", {**_opts(timeout=timeout, prompt=prompt), **kw})

    async def ai_unhold(self, *, prompt: Any = None, **kw: Any) -> dict[str, Any]:
        """Take the AI agent's caller off hold, optionally with a prompt (``calling.ai_unhold``)."""
        return await self._execute("ai_unhold", {**_opts(prompt=prompt), **kw})
