"""An outbound dialer written against the official SDK (``signalwire.relay`` 3.7.5): it dials,
then plays, records and hangs up on the dialled call. ``main()`` runs it from the driver;
a call to the ``callback`` context runs it from a handler (a callback request).

The migration test runs this text as is with the SDK, and with its import line changed to
``relay_actors`` in-process and on Ray; ``observe(label, what, value)`` is set by the test.
"""

import json
import uuid

from signalwire.relay import RelayClient, RelayError

client = RelayClient(contexts=["callback"])

observe = print


def phone(to_number):
    return [[{"type": "phone", "params": {"from_number": "+15550001000", "to_number": to_number}}]]


async def leave_message(label, to_number, dial_timeout=15):
    tag = "reminder-" + str(uuid.uuid4())
    try:
        call = await client.dial(phone(to_number), tag=tag, dial_timeout=dial_timeout)
    except RelayError as exc:
        failed = {"tag": tag, "-1": exc.code == -1, "404": exc.code == 404, "repr": repr(exc.code)}
        failed["json"] = json.dumps({"code": exc.code})
        failed["keyed"] = {-1: "client side"}.get(exc.code, "other")
        observe(label, "dial failed", failed)
        return
    observe(
        label,
        "call",
        {"call_id": call.call_id, "tag": call.tag, "state": call.state, "direction": call.direction},
    )
    call.on(
        "calling.call.state", lambda event: observe(label, "event", ("state", event.params["call_state"]))
    )
    call.on("calling.call.play", lambda event: observe(label, "event", ("play", event.params["state"])))
    call.on("calling.call.record", lambda event: observe(label, "event", ("record", event.params["state"])))

    play = await call.play_tts("This is a reminder of your appointment tomorrow.")
    played = await play.wait(timeout=10)
    observe(label, "played", (played.params["state"], play.is_done, play.completed))
    sent = await call.send_digits("12#")
    observe(label, "digits", sent.get("code"))

    record = await call.record({"format": "mp3", "direction": "both"})
    recorded = await record.wait(timeout=10)
    observe(
        label, "recorded", (recorded.params["state"], recorded.params["record"]["url"].rsplit(".", 1)[-1])
    )

    await call.hangup()
    ended = await call.wait_for_ended(timeout=10)
    observe(label, "ended", (ended.params["call_state"], ended.params.get("end_reason"), call.state))


async def main():
    """From the driver: one call that answers, one that is busy, one nobody answers in time."""
    await leave_message("driver", "+15550004001")
    await leave_message("driver busy", "+15550004002")
    await leave_message("driver no answer", "+15550004004", dial_timeout=0.5)
    observe("driver", "done", True)


@client.on_call
async def call_back(call):
    """A callback request: hang up on the caller, then call them back from the handler."""
    label = "handler"
    try:
        await call.hangup()
        await leave_message(label, call.device["params"]["from_number"])
    finally:
        observe(label, "done", True)
