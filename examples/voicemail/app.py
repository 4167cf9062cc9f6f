"""Voicemail: answer, play a greeting, record the caller, store the recording's URL and
metadata as one JSON line per message in ``$VOICEMAIL_DIR/voicemails.jsonl``.

Serve it (credentials from the environment: see README.md beside this file):
    VOICEMAIL_DIR=/var/lib/voicemail relay-actors run examples.voicemail.app:client
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from relay_actors import Call, RelayClient
from relay_actors.ray_runtime import RayOptions

log = logging.getLogger("examples.voicemail")

client = RelayClient(
    contexts=["voicemail"],
    ray_options=RayOptions(app="voicemail", min_call_actors=1, max_call_actors=4),
)

#: Read once, where the app is started: on Ray the handler travels to the CallActors with
#: this value (their environment is not the driver's). With CallActors on several nodes it
#: must be storage every node mounts.
STORE = Path(os.environ.get("VOICEMAIL_DIR", "voicemail")).resolve()
GREETING = "You have reached the office. Please leave a message after the beep."


def store(entry: dict[str, object]) -> None:
    """Append one voicemail's metadata (a single write of one line: appends do not interleave)."""
    STORE.mkdir(parents=True, exist_ok=True)
    with open(STORE / "voicemails.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")


@client.on_call
async def handle(call: Call) -> None:
    await call.answer()
    greeting = await call.play_tts(GREETING)
    await greeting.wait(timeout=60)
    started = time.time()
    recording = await call.record({"beep": True, "end_silence_timeout": 3, "format": "mp3"})
    done = await recording.wait(timeout=300)
    if not recording.url:
        log.warning("no recording from %s: %s", call.from_number, done.params.get("state"))
    else:
        store(
            {
                "call_id": call.call_id,
                "from": call.from_number,
                "to": call.to_number,
                "url": recording.url,
                "duration": done.params.get("duration"),
                "size": done.params.get("size"),
                "started": started,
            }
        )
        log.info("voicemail from %s stored: %s", call.from_number, recording.url)
    if call.state != "ended":
        thanks = await call.play_tts("Thank you. Goodbye.")
        await thanks.wait(timeout=30)
        await call.hangup()
