"""A small app for the test kit's own tests: speech or keys, a transfer, an audio goodbye."""

from __future__ import annotations

from relay_actors import Call, RelayClient

client = RelayClient(contexts=["desk"])
ASK = {"digits": {"max": 1, "digit_timeout": 5}, "speech": {}}
SUPPORT = "+15550100098"
GOODBYE_URL = "https://example.invalid/goodbye.mp3"


@client.on_call
async def desk(call: Call) -> None:
    await call.answer()
    prompt = await call.prompt_tts("Say a department, or press 0.", ASK)
    result = (await prompt.wait(timeout=30)).params.get("result", {})
    if result.get("params", {}).get("text") == "support":
        device = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": SUPPORT}}
        await call.connect([[device]])
        await call.wait_for_ended()  # connected or not, until a side hangs up
        return
    goodbye = await call.play_audio(GOODBYE_URL)
    await goodbye.wait(timeout=30)
    await call.hangup()
