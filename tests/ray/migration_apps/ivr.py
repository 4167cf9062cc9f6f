"""An inbound IVR written against the official SDK (``signalwire.relay`` 3.7.5).

The migration test runs this text as is with the SDK, and with its import line changed to
``relay_actors`` in-process and on Ray. ``observe(label, what, value)`` is where it reports
what it saw; the test sets it before connecting (each label is one caller).
"""

import asyncio

from signalwire.relay import (
    CALL_STATE_ENDED,
    EVENT_CALL_COLLECT,
    EVENT_CALL_CONNECT,
    EVENT_CALL_DETECT,
    EVENT_CALL_PLAY,
    EVENT_CALL_STATE,
    CallStateEvent,
    CollectEvent,
    RecordEvent,
    RelayClient,
    RelayError,
)

client = RelayClient(contexts=["ivr"])

observe = print

SALES = [[{"type": "phone", "params": {"from_number": "+15550001000", "to_number": "+15550002000"}}]]
MENU = [{"type": "tts", "params": {"text": "Press 1 or say sales, 2 or say support, 3 to hold."}}]


def listen(call, label):
    """Listeners for every event family the IVR drives (plain and coroutine callbacks)."""

    def on_state(event):
        observe(
            label, "event", ("state", isinstance(event, CallStateEvent), event.call_state, event.end_reason)
        )

    async def on_play(event):
        observe(label, "event", ("play", event.params["state"]))

    def on_collect(event):
        kind = event.result.get("type")
        observe(label, "event", ("collect", isinstance(event, CollectEvent), event.state, event.final, kind))

    def on_record(event):
        suffix = event.url.rsplit(".", 1)[-1]
        observe(label, "event", ("record", isinstance(event, RecordEvent), event.state, suffix))

    call.on(EVENT_CALL_STATE, on_state)
    call.on("calling.call.play", on_play)
    call.on(EVENT_CALL_COLLECT, on_collect)
    call.on("calling.call.record", on_record)
    call.on(EVENT_CALL_CONNECT, lambda e: observe(label, "event", ("connect", e.connect_state)))


async def to_sales(call, label):
    bridged = asyncio.ensure_future(
        call.wait_for(
            EVENT_CALL_CONNECT,
            lambda event: event.connect_state in ("connected", "failed"),
            timeout=10,
        )
    )
    result = await call.connect(SALES, ringback=[{"type": "ringtone", "params": {"name": "us"}}])
    observe(label, "connect", result["code"])
    event = await bridged
    peer = event.params.get("peer") or {}
    observe(label, "connected", (event.params["connect_state"], sorted(peer)))


async def support(call, label):
    account = await call.collect(digits={"max": 6, "terminators": "#", "digit_timeout": 5}, initial_timeout=5)
    entered = await account.wait(timeout=10)
    observe(label, "account", (entered.params["state"], entered.params["result"]))
    record = await call.record(
        {"beep": True, "format": "wav", "end_silence_timeout": 2},
        on_completed=lambda event: observe(label, "record completed", event.state),
    )
    recorded = await record.wait(timeout=10)
    details = recorded.params["record"]
    observe(label, "recorded", (recorded.params["state"], record.is_done, details["url"].rsplit(".", 1)[-1]))


async def hold(call, label):
    """Hold music until the caller gives up; then the call is gone."""
    music = await call.play_tts("Please hold.")
    observe(label, "held", (await music.wait(timeout=10)).params["state"])
    ended = await call.wait_for_ended(timeout=20)
    observe(label, "caller hung up", (ended.call_state, ended.end_reason))
    late = await call.play_tts("Are you still there?")
    gone = await late.wait(timeout=5)
    observe(label, "late play", (gone.event_type, gone.params, late.is_done))
    try:
        await call.wait_for(EVENT_CALL_PLAY, timeout=0.2)
    except asyncio.TimeoutError:
        observe(label, "no more events", "timeout")


@client.on_call
async def ivr(call):
    label = call.device["params"]["from_number"]
    observe(label, "call", {"call_id": call.call_id, "direction": call.direction, "state": call.state})
    listen(call, label)
    try:
        await call.answer()
        answered = await call.wait_for_answered(timeout=5)
        observe(label, "answered", (answered.params["call_state"], call.state))
        try:
            await call.wait_for(EVENT_CALL_DETECT, timeout=0.05)
        except asyncio.TimeoutError:
            observe(label, "no detect", "timeout")
        menu = await call.play_and_collect(
            MENU,
            {"digits": {"max": 1, "digit_timeout": 5}, "speech": {"hints": ["sales", "support"]}},
            on_completed=lambda event: observe(label, "menu completed", event.result.get("type")),
        )
        result = (await menu.wait(timeout=10)).params["result"]
        observe(label, "menu", result)
        if result["type"] == "no_match":
            retry = "Sorry, please say sales or support."
            again = await call.prompt_tts(retry, {"speech": {"end_silence_timeout": 1}})
            result = (await again.wait(timeout=10)).result
            observe(label, "menu again", result)
        params = result.get("params") or {}
        choice = params.get("digits") or params.get("text")
        if choice in ("1", "sales"):
            await to_sales(call, label)
        elif choice in ("2", "support"):
            await support(call, label)
        elif choice == "3":
            await hold(call, label)
        else:
            goodbye = await call.play_tts("Sorry, we did not get that. Goodbye.")
            finished = await goodbye.wait(timeout=10)
            observe(label, "goodbye", finished.params["state"])
        await call.hangup()
        ended = await call.wait_for_ended(timeout=10)
        observe(label, "ended", (ended.call_state, ended.end_reason, call.state == CALL_STATE_ENDED))
        # The call is gone: like any verb on it, a second hang-up is a no-op.
        observe(label, "hangup again", await call.hangup())
    except RelayError as exc:
        observe(label, "error", {"404": exc.code == 404, "client side": exc.code == -1})
    finally:
        observe(label, "done", True)
