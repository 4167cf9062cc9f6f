"""``Call``: the object an ``on_call`` handler (or ``dial``) gets, with the full call-control API.

A Call speaks to a :class:`CallControl` — the in-process connection, or a
proxy to the connection actor on Ray — so the same handler code runs in both.
Its protocol state (state machine, actions by ``control_id``) is a sans-IO
:class:`~relay_actors.protocol.calls.CallCore`; the host feeds it events with
:meth:`Call._deliver`.

Conventions, as in the official SDK: keyword arguments default to None and
are sent only when given; ``**kw`` extras merge into the params; a
``control_id`` is generated when omitted; commands return the result dict,
``{}`` when the call is already gone (404/410 is normal telephony, not an
error); any other error raises :class:`~relay_actors.errors.RelayError`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .action import (
    Action,
    AIAction,
    CollectAction,
    DetectAction,
    FaxAction,
    OnCompleted,
    PayAction,
    PlayAction,
    RecordAction,
    SendDigitsAction,
    StandaloneCollectAction,
    StreamAction,
    TapAction,
    TranscribeAction,
)
from .errors import ArgumentError, RelayError
from .protocol import constants as c
from .protocol.actions import empty_event
from .protocol.calls import STATE_RANK, CallCore
from .protocol.events import RelayEvent
from .tasks import BackgroundTasks, call_handler

__all__ = ["Call", "CallControl"]

log = logging.getLogger("relay_actors.call")

#: Verbs that may be sent again when the connection was cut while they were out (the
#: server ends up in the same state whether it ran them once or twice).
_IDEMPOTENT = frozenset({"answer", "end"})
_IDEMPOTENT_RETRIES = 2
#: Error codes of a request whose connection went before its result came back.
_CUT_OFF = frozenset({"connection_lost", "connection_closed"})

A = TypeVar("A", bound=Action)
EventHandler = Callable[[RelayEvent], Any]


class CallControl(Protocol):
    """What a Call needs from its host: a way to execute requests, and a task set."""

    tasks: BackgroundTasks

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


def _opts(**kw: Any) -> dict[str, Any]:
    """Keyword arguments that were given (not None)."""
    return {k: v for k, v in kw.items() if v is not None}


def _media_list(media: Any) -> list[dict[str, Any]]:
    if isinstance(media, dict):
        media = [media]
    if (
        not isinstance(media, list)
        or not media
        or not all(isinstance(m, dict) and m.get("type") for m in media)
    ):
        raise ArgumentError(
            'media must be a non-empty list of {"type": ..., "params": {...}} objects '
            '(e.g. [{"type": "tts", "params": {"text": "Hello"}}])'
        )
    return media


def _device_lists(devices: Any) -> list[list[dict[str, Any]]]:
    """Devices as the wire wants them: a list (tried in series) of lists (rung in parallel)."""
    if isinstance(devices, dict):
        devices = [[devices]]
    if isinstance(devices, list) and devices and all(isinstance(d, dict) for d in devices):
        devices = [devices]  # one parallel group
    if (
        not isinstance(devices, list)
        or not devices
        or not all(
            isinstance(g, list) and g and all(isinstance(d, dict) and d.get("type") for d in g)
            for g in devices
        )
    ):
        raise ArgumentError(
            'devices must be a list of lists of {"type": ..., "params": {...}} device objects'
        )
    return devices


class Call:
    """One call leg and everything that can be done with it (see the module docstring)."""

    def __init__(self, control: CallControl, core: CallCore) -> None:
        self._control = control
        self._core = core
        self._actions: dict[str, Action] = {}
        self._listeners: dict[str, list[EventHandler]] = {}
        self._waiters: list[tuple[str, Callable[[RelayEvent], bool] | None, asyncio.Future[RelayEvent]]] = []
        self._state_events: dict[str, RelayEvent] = {}
        #: Set when this call was re-homed to a new process after a crash (Ray runtime).
        self.recovered = False

    # --- identity and state -------------------------------------------------------

    call_id = property(lambda self: self._core.call_id, doc="The call leg's UUID.")
    node_id = property(lambda self: self._core.node_id, doc="The server node that owns the call.")
    project_id = property(lambda self: self._core.project_id)
    tag = property(lambda self: self._core.tag)
    direction = property(lambda self: self._core.direction, doc="``inbound`` or ``outbound``.")
    device = property(lambda self: self._core.device, doc="``{type, params}`` of the far end.")
    segment_id = property(lambda self: self._core.segment_id)
    state = property(
        lambda self: self._core.state, doc="``created``, ``ringing``, ``answered``, ``ending``, ``ended``."
    )
    end_reason = property(
        lambda self: self._core.end_reason, doc="Why the call ended (``hangup``, ``busy``, ...)."
    )

    @property
    def context(self) -> str:
        """The context the call arrived on (the SDK reports its protocol string instead)."""
        return self._core.context

    @property
    def from_number(self) -> str:
        params = self.device.get("params") or {}
        return str(params.get("from_number") or params.get("from") or "")

    @property
    def to_number(self) -> str:
        params = self.device.get("params") or {}
        return str(params.get("to_number") or params.get("to") or "")

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.direction} {self.state}>"

    # --- event plumbing -----------------------------------------------------------

    def _deliver(self, event: RelayEvent) -> None:
        """Feed one event for this call (called by the host, in arrival order)."""
        update = self._core.apply(event)
        if not update.accepted:
            return
        for record in update.finished:
            action = self._actions.pop(record.control_id, None)
            if action is not None and record.result is not None:
                action._resolve(record.result)
        if update.state_changed:
            self._state_events[self._core.state] = event
        if self._waiters:
            for waiter in list(self._waiters):
                event_type, predicate, future = waiter
                if future.done():
                    self._waiters.remove(waiter)
                elif event.event_type == event_type:
                    try:
                        matched = predicate is None or predicate(event)
                    except Exception as exc:
                        # A broken predicate fails its own waiter, not the delivery to the others.
                        self._waiters.remove(waiter)
                        future.set_exception(exc)
                        continue
                    if matched:
                        self._waiters.remove(waiter)
                        future.set_result(event)
        for handler in self._listeners.get(event.event_type, ()):
            self._fire(handler, event, f"listener for {event.event_type}")
        if self._core.ended:
            self._gone(event)

    def _gone(self, event: RelayEvent) -> None:
        """The call ended (or was lost): no action or state waiter may wait forever."""
        for action in list(self._actions.values()):
            action._resolve(event)
        self._actions.clear()
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(RelayError("call_ended", f"call {self.call_id} ended"))
                future.add_done_callback(lambda f: f.exception())
        self._waiters.clear()

    def _lost(self, reason: str = "lost") -> None:
        """The host lost this call (e.g. the session was restarted): end it locally."""
        if self._core.ended:
            return
        event = RelayEvent(
            c.EVENT_CALL_STATE,
            {
                "call_id": self.call_id,
                "node_id": self.node_id,
                "call_state": c.CALL_STATE_ENDED,
                "end_reason": reason,
            },
            self.call_id,
        )
        self._deliver(event)

    def _fire(self, handler: EventHandler, event: RelayEvent, what: str) -> None:
        call_handler(self._control.tasks, handler, event, what=f"{what} on call {self.call_id}")

    def on(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler`` (plain or async) with every ``event_type`` event of this call."""
        self._listeners.setdefault(event_type, []).append(handler)

    def off(self, event_type: str, handler: EventHandler | None = None) -> None:
        """Remove one listener, or all listeners of ``event_type``."""
        if handler is None:
            self._listeners.pop(event_type, None)
        elif handler in self._listeners.get(event_type, ()):
            self._listeners[event_type].remove(handler)

    async def wait_for(
        self,
        event_type: str,
        predicate: Callable[[RelayEvent], bool] | None = None,
        timeout: float | None = None,
    ) -> RelayEvent:
        """The next ``event_type`` event (matching ``predicate``). Raises
        ``asyncio.TimeoutError``, or ``RelayError("call_ended")`` if the call ends first."""
        if self._core.ended:
            # Nothing more will come, state events included (``wait_for_*`` answer at once).
            raise RelayError("call_ended", f"call {self.call_id} has ended")
        future: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
        waiter = (event_type, predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _wait_state(self, state: str, timeout: float | None) -> RelayEvent:
        if self._core.at_least(state):
            return self._state_events.get(state) or self._state_event()
        rank = STATE_RANK[state]
        return await self.wait_for(
            c.EVENT_CALL_STATE,
            lambda ev: STATE_RANK.get(ev.params.get("call_state") or "", -1) >= rank,
            timeout,
        )

    def _state_event(self) -> RelayEvent:
        latest = self._state_events.get(self._core.state)
        return latest or RelayEvent(
            c.EVENT_CALL_STATE, {"call_id": self.call_id, "call_state": self._core.state}, self.call_id
        )

    async def wait_for_ringing(self, timeout: float | None = None) -> RelayEvent:
        return await self._wait_state(c.CALL_STATE_RINGING, timeout)

    async def wait_for_answered(self, timeout: float | None = None) -> RelayEvent:
        return await self._wait_state(c.CALL_STATE_ANSWERED, timeout)

    async def wait_for_ending(self, timeout: float | None = None) -> RelayEvent:
        return await self._wait_state(c.CALL_STATE_ENDING, timeout)

    async def wait_for_ended(self, timeout: float | None = None) -> RelayEvent:
        """The ``ended`` state event (at once if the call already ended)."""
        return await self._wait_state(c.CALL_STATE_ENDED, timeout)

    # --- plumbing for commands ----------------------------------------------------

    async def _execute(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``calling.<method>`` for this call. 404/410 → ``{}`` (logged)."""
        payload: dict[str, Any] = {"node_id": self.node_id, "call_id": self.call_id}
        if params:
            payload.update(params)
        attempts = _IDEMPOTENT_RETRIES if method in _IDEMPOTENT else 0
        while True:
            try:
                return await self._control.execute(f"calling.{method}", payload)
            except RelayError as exc:
                if exc.call_gone:
                    log.info("call %s is gone (%s) during %s", self.call_id, exc.code, method)
                    return {}
                if attempts and exc.code in _CUT_OFF:
                    # The connection went while the request was out: it may or may not
                    # have run. Running it again is harmless for these verbs, and failing
                    # would make a handler give up a healthy call over a network blip.
                    attempts -= 1
                    log.info("call %s: %s cut off (%s); sending it again", self.call_id, method, exc.code)
                    continue
                raise

    async def _start(
        self,
        kind: str,
        params: dict[str, Any],
        control_id: str | None,
        on_completed: OnCompleted | None,
        factory: Callable[[str], A],
        method: str | None = None,
    ) -> A:
        """Register an action under its control_id, then send its start request."""
        control_id = control_id or str(uuid.uuid4())
        action = factory(control_id)
        if on_completed is not None:
            action._on_completed = on_completed
        if self._core.ended:
            action._resolve(empty_event())
            return action
        self._core.actions.start(kind, control_id)
        self._actions[control_id] = action
        try:
            result = await self._execute(method or kind, {"control_id": control_id, **params})
        except BaseException as exc:
            self._core.actions.discard(control_id)
            self._actions.pop(control_id, None)
            action._fail(exc)
            raise
        action.start_result = result
        if not result:
            # The call is gone: nothing will ever finish this action but us.
            self._core.actions.finish(control_id)
            if self._actions.pop(control_id, None) is not None:
                action._resolve(empty_event())
        return action

    # --- lifecycle ----------------------------------------------------------------

    async def answer(self, **kw: Any) -> dict[str, Any]:
        """Answer an inbound call (``codecs``, ``max_duration`` may be given)."""
        return await self._execute("answer", kw)

    async def hangup(self, reason: str = "hangup") -> dict[str, Any]:
        """End the call (``calling.end``); ``reason``: hangup, cancel, busy, noAnswer, decline, error."""
        return await self._execute("end", {"reason": reason})

    async def pass_(self) -> dict[str, Any]:
        """Decline to handle an inbound call: the service offers it to another consumer.

        Once passed the call is no longer ours: it ends here (``end_reason``
        ``"passed"``; waiters and actions resolve) and frees its slot."""
        result = await self._execute("pass")
        if result:
            self._lost("passed")
            release = getattr(self._control, "_release_call", None)
            if release is not None:
                release(self.call_id)
        return result

    # --- play ---------------------------------------------------------------------

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
        return await self.play(
            [{"type": "audio", "params": {"url": url}}], volume=volume, on_completed=on_completed, **kw
        )

    async def play_silence(
        self, duration: float, *, on_completed: OnCompleted | None = None, **kw: Any
    ) -> PlayAction:
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
        media = {"type": "ringtone", "params": {"name": name, **_opts(duration=duration)}}
        return await self.play([media], volume=volume, on_completed=on_completed, **kw)

    # --- record -------------------------------------------------------------------

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

    # --- collect ------------------------------------------------------------------

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

    # --- detect -------------------------------------------------------------------

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
        return await self.detect(
            {"type": "digit", "params": _opts(digits=digits)},
            timeout=timeout,
            on_completed=on_completed,
            **kw,
        )

    # --- fax, tap, stream, pay, transcribe, ai --------------------------------------

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
        params = {"document": document, **_opts(identity=identity, header_info=header_info), **kw}
        return await self._start(
            "send_fax", params, control_id, on_completed, lambda cid: FaxAction(self, cid, None, "send_fax")
        )

    async def receive_fax(
        self, *, control_id: str | None = None, on_completed: OnCompleted | None = None, **kw: Any
    ) -> FaxAction:
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
        params = {**_opts(status_url=status_url), **kw}
        return await self._start(
            "transcribe", params, control_id, on_completed, lambda cid: TranscribeAction(self, cid)
        )

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

    # --- bridging and transfer ----------------------------------------------------

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
        return await self._execute("refer", {"device": device, **_opts(status_url=status_url), **kw})

    async def transfer(self, dest: str, **kw: Any) -> dict[str, Any]:
        """Hand the call to SWML (URL or inline) or to ``context:<name>``."""
        return await self._execute("transfer", {"dest": dest, **kw})

    # --- conferences, rooms, queues -----------------------------------------------

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
        return await self._execute("leave_conference", {"conference_id": conference_id, **kw})

    async def join_room(self, name: str, *, status_url: str | None = None, **kw: Any) -> dict[str, Any]:
        return await self._execute("join_room", {"name": name, **_opts(status_url=status_url), **kw})

    async def leave_room(self, **kw: Any) -> dict[str, Any]:
        return await self._execute("leave_room", kw)

    async def queue_enter(
        self, queue_name: str, *, control_id: str | None = None, status_url: str | None = None, **kw: Any
    ) -> dict[str, Any]:
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
        params = {
            "control_id": control_id or str(uuid.uuid4()),
            "queue_name": queue_name,
            **_opts(queue_id=queue_id, status_url=status_url),
        }
        return await self._execute("queue.leave", {**params, **kw})

    # --- media features -----------------------------------------------------------

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

    # --- AI helpers ---------------------------------------------------------------

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
        params = _opts(message_text=message_text, role=role, reset=reset, global_data=global_data)
        return await self._execute("ai_message", {**params, **kw})

    async def ai_hold(self, *, timeout: Any = None, prompt: Any = None, **kw: Any) -> dict[str, Any]:
        return await self._execute("ai_hold", {**_opts(timeout=timeout, prompt=prompt), **kw})

    async def ai_unhold(self, *, prompt: Any = None, **kw: Any) -> dict[str, Any]:
        return await self._execute("ai_unhold", {**_opts(prompt=prompt), **kw})
