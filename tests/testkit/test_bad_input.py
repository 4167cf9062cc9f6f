"""Bad input to the test kit's fixtures gets an error that says what is wrong and what to do:
a context no app receives, an app module that does not import or holds no such client."""

from __future__ import annotations

import pytest

from relay_actors.testkit import AppError, UnknownContextError, press


def test_a_context_nobody_receives(relay_emulator, relay_app) -> None:
    with pytest.raises(
        UnknownContextError, match=r"no app receives context 'front'; the contexts received are: none"
    ):
        relay_emulator.call("front", press("1"))  # no app started yet
    relay_app("examples.ivr.app:client")
    with pytest.raises(
        UnknownContextError, match=r"no app receives context 'ofice'; the contexts received are: office"
    ):
        relay_emulator.call("ofice", press("1"))
    with pytest.raises(UnknownContextError, match=r"relay_emulator.sms\('sales'\): no app receives"):
        relay_emulator.sms("sales", "hi")
    relay_emulator.call("office", press("1")).expect.next_event().is_answered()  # the right one works


def test_an_app_module_that_does_not_import(relay_app) -> None:
    with pytest.raises(AppError, match=r"(?s)exited \(1\) before 'relay-actors: ready:': "
                       r"relay-actors: error: no module named 'frontdesk_typo' here"):  # fmt: skip
        relay_app("frontdesk_typo:client")
    with pytest.raises(
        AppError,
        match=r"examples.ivr.app.cleint does not exist; examples.ivr.app has examples.ivr.app:client",
    ):
        relay_app("examples.ivr.app:cleint")
    with pytest.raises(AppError, match=r"give the app as MODULE:CLIENT"):
        relay_app(":client")
