"""SMS auto-responder: answer every inbound message by keyword, follow the reply until the
carrier reports it delivered or not (``message.wait()``), and record one JSON line per
message in ``$RESPONDER_DIR/replies.jsonl``.

Serve it (credentials from the environment: see README.md beside this file):
    RESPONDER_DIR=/var/lib/responder relay-actors run examples.sms_responder.app:client
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from relay_actors import Message, RelayClient, RelayError
from relay_actors.ray_runtime import RayOptions

log = logging.getLogger("examples.sms_responder")

client = RelayClient(
    contexts=["sms"],
    ray_options=RayOptions(app="responder", min_call_actors=1, max_call_actors=2),
)

#: Read once, where the app is started (on Ray the handler carries it to the CallActors;
#: with CallActors on several nodes it must be storage every node mounts).
STORE = Path(os.environ.get("RESPONDER_DIR", "responder")).resolve()
REPLIES = {
    "HOURS": "We are open 9am-5pm, Monday to Friday.",
    "STOP": "You will not receive more messages from us.",
}
DEFAULT_REPLY = "Thanks for your message, we will get back to you. Reply HOURS for our opening hours."


def reply_for(body: str) -> tuple[str, str]:
    """(keyword, reply text) for an inbound body; keyword ``""`` for the default reply.

    The keyword is the first word, its case and punctuation ignored: ``"hours?"`` is ``HOURS``."""
    first = re.match(r"\W*(\w+)", body)
    word = first.group(1).upper() if first else ""
    keyword = word if word in REPLIES else ""
    return keyword, REPLIES.get(keyword, DEFAULT_REPLY)


def store(entry: dict[str, object]) -> None:
    """Append one message's outcome (one short write: lines do not interleave)."""
    STORE.mkdir(parents=True, exist_ok=True)
    with open(STORE / "replies.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")


@client.on_message
async def respond(message: Message) -> None:
    keyword, text = reply_for(message.body)
    entry: dict[str, object] = {
        "message_id": message.message_id,
        "from": message.from_number,
        "keyword": keyword,
        "received": time.time(),
    }
    try:
        reply = await client.send_message(
            to_number=message.from_number, from_number=message.to_number, body=text
        )
        await reply.wait(timeout=120)  # delivered, undelivered or failed
        entry.update(reply_id=reply.message_id, state=reply.state, reason=reply.reason)
    except (RelayError, TimeoutError) as exc:
        entry.update(state="error", reason=str(exc))
    entry["finished"] = time.time()
    store(entry)
    log.info("reply to %s: %s", message.from_number, entry["state"])
