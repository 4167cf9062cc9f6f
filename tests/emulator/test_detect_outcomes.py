"""``detect_outcomes``: a dialled number's answering-machine detection result, so a
campaign can meet a person, a machine and an undecided line in one run."""

from __future__ import annotations

import pytest

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import RawClient


async def _detect_events(client: RawClient, number: str, tag: str) -> list[str]:
    device = {"type": "phone", "params": {"to_number": number, "from_number": "+15550000000"}}
    await client.request("calling.dial", {"tag": tag, "devices": [[device]]})
    dialled = await client.wait_event("calling.call.dial", tag=tag, dial_state="answered")
    call_id = dialled["call"]["call_id"]
    params = {"call_id": call_id, "control_id": tag, "detect": {"type": "machine", "params": {}}}
    await client.request("calling.detect", params)
    finished = {"detect": {"type": "machine", "params": {"event": "finished"}}}
    await client.wait_event("calling.call.detect", control_id=tag, **finished)
    return [
        frame["params"]["params"]["detect"]["params"]["event"]
        for frame in client.frames
        if frame.get("method") == "signalwire.event"
        and frame["params"].get("event_type") == "calling.call.detect"
        and frame["params"]["params"].get("control_id") == tag
    ]


async def test_each_dialled_number_detects_as_configured(emulator: Emulator, client: RawClient) -> None:
    emulator.core.set_config({"detect_outcomes": {"+15550001111": ["HUMAN"], "+15550002222": ["UNKNOWN"]}})
    assert await _detect_events(client, "+15550001111", "a") == ["HUMAN", "finished"]
    assert await _detect_events(client, "+15550002222", "b") == ["UNKNOWN", "finished"]
    # Any other number: the configuration's detect_results for the type.
    assert await _detect_events(client, "+15550003333", "c") == ["MACHINE", "READY", "finished"]


@pytest.mark.parametrize("bad", [["HUMAN"], {"+1": "HUMAN"}, {"+1": [1]}])
def test_bad_detect_outcomes_are_refused(emulator: Emulator, bad: object) -> None:
    with pytest.raises(ValueError):
        emulator.core.set_config({"detect_outcomes": bad})
