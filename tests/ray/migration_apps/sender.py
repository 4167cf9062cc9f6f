"""A message sender written against the official SDK (``signalwire.relay`` 3.7.5): it sends,
waits for delivery, and tells failed requests apart by their error codes, the SDK way.
``main()`` runs from the driver; an inbound message on ``sms`` runs it from a handler.

The migration test runs this text as is with the SDK, and with its import line changed to
``relay_actors`` in-process and on Ray; ``observe(label, what, value)`` is set by the test.
"""

import json
import logging

from signalwire.relay import (
    MESSAGE_STATE_DELIVERED,
    MESSAGE_STATE_FAILED,
    MESSAGE_STATE_UNDELIVERED,
    RelayClient,
    RelayError,
    RelayEvent,
)

client = RelayClient(contexts=["sms"])

observe = print

SENDER = "+15550005000"


#: What an app keys on the code: alerts per code, a set of codes it retries.
ALERTS = {404: "no such call", 402: "payment required", -32602: "bad request", -1: "client side"}
RETRIED = {-1, 503}


def codes(exc):
    """What an SDK app asks of a RelayError's code: compares it, logs its repr, stores it as
    JSON, keys a dict and a set on it."""
    logged = logging.Formatter("%(message)s").format(
        logging.makeLogRecord({"msg": "request failed: code=%r", "args": (exc.code,)})
    )
    logging.getLogger("sender").warning(logged)
    return {
        "logged": logged,
        "repr": repr(exc.code),
        "json": json.dumps({"code": exc.code, "message": "x"}),
        "json back": json.loads(json.dumps({"code": exc.code}))["code"] == exc.code,
        "type": type(exc.code).__name__,
        "alert": ALERTS.get(exc.code, "other"),
        "retried": exc.code in RETRIED,
        "counted": json.dumps(sorted({exc.code: 1}.items())),
        "404": exc.code == 404,
        "402": exc.code == 402,
        "gone": exc.code in (404, 410),
        "4xx": 400 <= exc.code < 500,
        "client side": exc.code == -1,
        "invalid params": exc.code == -32602,
    }


async def send_and_wait(label, to_number, body, tags=None):
    states = []
    message = await client.send_message(
        to_number=to_number,
        from_number=SENDER,
        body=body,
        tags=tags,
        on_completed=lambda event: states.append("completed"),
    )
    sent = {
        "message_id": message.message_id,
        "state": message.state,
        "body": message.body,
        "tags": message.tags,
    }
    observe(label, "sent", sent)

    async def on_state(event):
        states.append((event.params["message_state"], isinstance(event, RelayEvent)))

    message.on(on_state)
    final = await message.wait(timeout=10)
    terminal = message.state in (MESSAGE_STATE_DELIVERED, MESSAGE_STATE_UNDELIVERED, MESSAGE_STATE_FAILED)
    observe(
        label,
        "final",
        (final.params["message_state"], message.state, message.is_done, terminal, message.reason),
    )
    observe(label, "result", message.result is not None and message.result.params["message_state"])
    observe(label, "states", states)


async def failing_requests(label):
    try:
        await client.execute(
            "calling.end", {"node_id": "nowhere", "call_id": "no-such-call", "reason": "hangup"}
        )
        observe(label, "unknown call", "no error")
    except RelayError as exc:
        observe(label, "unknown call", codes(exc))
    try:
        await client.execute("calling.dial", {"tag": "no devices"})
        observe(label, "invalid", "no error")
    except RelayError as exc:
        observe(label, "invalid", codes(exc))
    try:
        await client.receive(["premium"])
        observe(label, "premium", "no error")
    except RelayError as exc:
        observe(label, "premium", codes(exc))
    try:
        await client.send_message(to_number="+15550006001", from_number=SENDER)
        observe(label, "empty", "no error")
    except ValueError:
        observe(label, "empty", "ValueError")


async def main():
    """From the driver."""
    label = "driver"
    await send_and_wait(label, "+15550006001", "Your order has shipped.", tags=["orders"])
    await send_and_wait(label + " undelivered", "+15550006002", "Your order has shipped.")
    await send_and_wait(label + " failed", "+15550006003", "Your order has shipped.")
    await failing_requests(label)
    observe(label, "done", True)


@client.on_message
async def reply(message):
    """An inbound message gets a reply, sent and tracked from the handler."""
    label = "handler"
    try:
        seen = (message.body, message.from_number, message.direction, message.state, message.context)
        observe(label, "inbound", (*seen, message.media, message.tags, message.segments))
        await send_and_wait(label, message.from_number, "Thanks, we got: " + message.body)
        await failing_requests(label)
    finally:
        observe(label, "done", True)
