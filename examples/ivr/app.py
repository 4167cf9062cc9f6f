"""An IVR: answer, menu, route by digit (sales, support, voicemail), retry, goodbye.

Serve it (credentials from the environment: see README.md beside this file):
    relay-actors run examples.ivr.app:client            # in-process
    relay-actors run examples.ivr.app:client --ray      # on Ray
"""

from __future__ import annotations

import logging

from relay_actors import Call, RelayClient
from relay_actors.ray_runtime import RayOptions

log = logging.getLogger("examples.ivr")

client = RelayClient(
    contexts=["office"],
    ray_options=RayOptions(app="ivr", min_call_actors=2, max_call_actors=4),
)

MENU = "Press 1 for sales, 2 for support, 3 to leave a message."
DIGITS = {"digits": {"max": 1, "digit_timeout": 5, "terminators": "#"}}
ATTEMPTS = 3
#: Where each transfer rings: the caller ID is our number, the destination the team's.
TEAMS = {
    "1": ("sales", "+15550100099"),
    "2": ("support", "+15550100098"),
}
OUR_NUMBER = "+15550100001"


async def menu_choice(call: Call) -> str:
    """The digit the caller pressed ("" for none), asking up to ``ATTEMPTS`` times."""
    for attempt in range(ATTEMPTS):
        prompt = await call.prompt_tts(MENU if attempt == 0 else f"Sorry. {MENU}", DIGITS)
        result = (await prompt.wait(timeout=30)).params.get("result", {})
        digit = result.get("params", {}).get("digits", "") if result.get("type") == "digit" else ""
        if digit in TEAMS or digit == "3":
            return digit
        log.info("menu attempt %d: %s %r", attempt + 1, result.get("type", "nothing"), digit)
    return ""


@client.on_call
async def handle(call: Call) -> None:
    await call.answer()
    digit = await menu_choice(call)
    if digit in TEAMS:
        team, number = TEAMS[digit]
        log.info("route %s: transfer to %s", digit, team)
        device = {"type": "phone", "params": {"from_number": OUR_NUMBER, "to_number": number}}
        await call.connect([[device]], ringback=[{"type": "ringtone", "params": {"name": "us"}}])
        await call.wait_for_ended()  # the bridge lasts until either side hangs up
        return
    if digit == "3":
        log.info("route 3: voicemail")
        beep = await call.play_tts("Leave a message after the beep.")
        await beep.wait(timeout=30)
        recording = await call.record({"beep": True, "end_silence_timeout": 3})
        await recording.wait(timeout=120)
        log.info("voicemail from %s: %s", call.from_number, recording.url)
    else:
        log.info("route none: goodbye")
    goodbye = await call.play_tts("Thank you for calling. Goodbye.")
    await goodbye.wait(timeout=30)
    await call.hangup()
