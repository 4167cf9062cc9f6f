"""A small IVR on RelayClient: answer, menu, route by digit, voicemail.

Run against your space with SIGNALWIRE_PROJECT_ID, SIGNALWIRE_API_TOKEN and SIGNALWIRE_SPACE set:
    python examples/ivr.py
or against the emulator: start ``relay-actors emulator``, set those variables from its ready line
and SIGNALWIRE_RELAY_SCHEME=ws.
"""

from __future__ import annotations

import logging

from relay_actors import Call, Message, RelayClient

client = RelayClient(contexts=["office"])

MENU = {"digits": {"max": 1, "digit_timeout": 5, "terminators": "#"}}
SALES = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100099"}}


@client.on_call
async def handle(call: Call) -> None:
    await call.answer()
    prompt = await call.prompt_tts("Press 1 for sales, 2 to leave a message.", MENU)
    result = (await prompt.wait(timeout=30)).params.get("result", {})
    digit = result.get("params", {}).get("digits", "") if result.get("type") == "digit" else ""
    if digit == "1":
        await call.connect([[SALES]], ringback=[{"type": "ringtone", "params": {"name": "us"}}])
        await call.wait_for_ended()
        return
    beep = await call.play_tts("Leave a message after the beep.")
    await beep.wait()
    recording = await call.record({"beep": True, "end_silence_timeout": 3})
    await recording.wait(timeout=120)
    logging.info("voicemail from %s: %s", call.from_number, recording.url)
    await call.hangup()


@client.on_message
async def sms(message: Message) -> None:
    await client.send_message(
        to_number=message.from_number, from_number=message.to_number, body="Thanks, we will call you back."
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    client.run()
