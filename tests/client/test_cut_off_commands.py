"""A command cut off by a connection loss (``connection_lost``/``connection_closed``: it may
or may not have run) is sent again when running it twice is harmless (answer, end), so a
network blip never makes a handler give up a healthy call; other commands fail visibly."""

from __future__ import annotations

from typing import Any

import pytest

from relay_actors import RelayError
from relay_actors.call import Call
from relay_actors.protocol.calls import CallCore
from relay_actors.tasks import BackgroundTasks


class CutOnce:
    """The seam a Call sends through (the connection, or a CallActor's link): the first
    ``cuts`` requests are cut off, the rest succeed."""

    def __init__(self, cuts: int, failure: str = "connection_lost") -> None:
        self.cuts = cuts
        self.failure = failure
        self.sent: list[str] = []
        self.tasks = BackgroundTasks()

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(method)
        if self.cuts:
            self.cuts -= 1
            raise RelayError(self.failure, "the connection went; it may or may not have run")
        return {"code": "200", "message": "OK"}


def _call(control: CutOnce) -> Call:
    return Call(control, CallCore.from_params({"call_id": "c1", "node_id": "n1", "call_state": "ringing"}))


@pytest.mark.parametrize("code", ["connection_lost", "connection_closed"])
async def test_answer_and_hangup_are_sent_again(code: str) -> None:
    control = CutOnce(cuts=2, failure=code)
    call = _call(control)
    assert (await call.answer())["code"] == "200"
    assert control.sent == ["calling.answer"] * 3
    control.cuts = 1
    assert (await call.hangup())["code"] == "200"
    assert control.sent[3:] == ["calling.end"] * 2


async def test_retries_are_bounded() -> None:
    control = CutOnce(cuts=10)
    with pytest.raises(RelayError) as info:
        await _call(control).answer()
    assert info.value.failure == "connection_lost" and len(control.sent) == 3


async def test_other_commands_fail_visibly() -> None:
    control = CutOnce(cuts=1)
    with pytest.raises(RelayError) as info:
        await _call(control)._execute("connect", {"devices": []})
    assert info.value.failure == "connection_lost" and control.sent == ["calling.connect"]
