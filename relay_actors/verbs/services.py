"""Fax, tap, stream, pay and transcribe: media services on a call."""

from __future__ import annotations

from typing import Any

from ..action import (
    FaxAction,
    OnCompleted,
    PayAction,
    StreamAction,
    TapAction,
    TranscribeAction,
)
from ..call_base import CallBase, _opts


class ServiceVerbs(CallBase):
    """Fax, tap, stream, pay and transcribe: media services on a call."""

    __slots__ = ()

    async def send_fax(
        self,
        document: str,
        *,
        identity: str | None = None,
        header_info: str | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> FaxAction:
        """Send the fax ``document`` (a URL); returns a ``FaxAction``."""
        params = {"document": document, **_opts(identity=identity, header_info=header_info), **kw}
        return await self._start(
            "send_fax", params, control_id, on_completed, lambda cid: FaxAction(self, cid, None, "send_fax")
        )

    async def receive_fax(
        self, *, control_id: str | None = None, on_completed: OnCompleted | None = None, **kw: Any
    ) -> FaxAction:
        """Receive a fax on the call; returns a ``FaxAction``."""
        return await self._start(
            "receive_fax",
            dict(kw),
            control_id,
            on_completed,
            lambda cid: FaxAction(self, cid, None, "receive_fax"),
        )

    async def tap(
        self,
        tap: dict[str, Any],
        device: dict[str, Any],
        *,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> TapAction:
        """Copy the call's audio to an RTP or WebSocket device."""
        params = {"tap": tap, "device": device, **kw}
        return await self._start("tap", params, control_id, on_completed, lambda cid: TapAction(self, cid))

    async def stream(
        self,
        url: str,
        *,
        name: str | None = None,
        codec: str | None = None,
        track: str | None = None,
        status_url: str | None = None,
        status_url_method: str | None = None,
        authorization_bearer_token: str | None = None,
        custom_parameters: dict[str, Any] | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> StreamAction:
        """Stream the call's audio to the WebSocket ``url``; returns a ``StreamAction``."""
        params = {
            "url": url,
            **_opts(
                name=name,
                codec=codec,
                track=track,
                status_url=status_url,
                status_url_method=status_url_method,
                authorization_bearer_token=authorization_bearer_token,
                custom_parameters=custom_parameters,
            ),
            **kw,
        }
        return await self._start(
            "stream", params, control_id, on_completed, lambda cid: StreamAction(self, cid)
        )

    async def pay(
        self,
        payment_connector_url: str,
        *,
        input_method: str | None = None,
        status_url: str | None = None,
        payment_method: str | None = None,
        timeout: Any = None,
        max_attempts: Any = None,
        security_code: Any = None,
        postal_code: Any = None,
        min_postal_code_length: Any = None,
        token_type: str | None = None,
        charge_amount: str | None = None,
        currency: str | None = None,
        language: str | None = None,
        voice: str | None = None,
        description: str | None = None,
        valid_card_types: str | None = None,
        parameters: list[dict[str, Any]] | None = None,
        prompts: list[dict[str, Any]] | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> PayAction:
        """Collect a card payment through ``payment_connector_url``; returns a ``PayAction``."""
        params = {
            "payment_connector_url": payment_connector_url,
            **_opts(
                input=input_method,
                status_url=status_url,
                payment_method=payment_method,
                timeout=timeout,
                max_attempts=max_attempts,
                security_code=security_code,
                postal_code=postal_code,
                min_postal_code_length=min_postal_code_length,
                token_type=token_type,
                charge_amount=charge_amount,
                currency=currency,
                language=language,
                voice=voice,
                description=description,
                valid_card_types=valid_card_types,
                parameters=parameters,
                prompts=prompts,
            ),
            **kw,
        }
        return await self._start("pay", params, control_id, on_completed, lambda cid: PayAction(self, cid))

    async def transcribe(
        self,
        *,
        status_url: str | None = None,
        control_id: str | None = None,
        on_completed: OnCompleted | None = None,
        **kw: Any,
    ) -> TranscribeAction:
        """Transcribe the call; returns a ``TranscribeAction``."""
        params = {**_opts(status_url=status_url), **kw}
        return await self._start(
            "transcribe", params, control_id, on_completed, lambda cid: TranscribeAction(self, cid)
        )
