"""Credentials never leak: not in DEBUG logs (connect, resume, authorization state,
rejections), not in reprs, not in exception messages."""

from __future__ import annotations

import logging

import pytest

from relay_actors import RelayClient
from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import wait_until
from relay_actors.errors import AuthenticationError

from .conftest import Harness, client_kwargs


def leaks(text: str, secrets: list[str], window: int = 12) -> list[str]:
    """The secrets of which ``text`` holds the whole value or any ``window``-character piece."""
    found = []
    for secret in secrets:
        pieces = {secret[i : i + window] for i in range(max(1, len(secret) - window + 1))}
        if any(piece in text for piece in pieces):
            found.append(secret[:4] + "…")
    return found


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


async def test_no_secret_in_debug_logs(
    emulator: Emulator, make_harness: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h: Harness = await make_harness()  # type: ignore[operator]
    # Without contexts the credential is the very end of the connect frame.
    jwt_client = RelayClient(
        **client_kwargs(emulator, project=None, token=None, contexts=[]), jwt_token=emulator.jwt
    )
    bare_client = RelayClient(**client_kwargs(emulator, contexts=[]))
    await jwt_client.connect()
    await bare_client.connect()
    try:
        for client in (h.client, jwt_client, bare_client):
            session = client._conn.session  # type: ignore[union-attr]
            await wait_until(lambda s=session: s.authorization_state)
            first_state = session.authorization_state
            emulator.core.drop(client.relay_protocol)
            await wait_until(lambda c=client: c.connected and c.stats()["resumes"] >= 1)
            await wait_until(lambda s=session, f=first_state: s.authorization_state != f)
        secrets = [
            emulator.token,
            emulator.jwt,
            first_state,
            h.client._conn.session.authorization_state,  # type: ignore[union-attr]
        ]
        # The resume frames really carried them (masked in the journal, as the server saw them).
        assert h.requests("signalwire.connect")[-1]["authorization_state"] == "***"
        # A rejected connect is logged too.
        bad = RelayClient(**client_kwargs(emulator, token="bad-" + emulator.token))
        with pytest.raises(AuthenticationError):
            await bad.connect()
        await bad.disconnect()
    finally:
        await jwt_client.disconnect()
        await bare_client.disconnect()
    # The sans-IO session holds the resume blob and the credentials: its repr shows neither.
    session_repr = repr(h.client._conn.session)  # type: ignore[union-attr]
    assert h.client.relay_protocol in session_repr
    assert leaks(session_repr, secrets) == []
    text = log_text(caplog)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG really was captured
    assert "connected to" in text
    assert leaks(text, [*secrets, "bad-" + emulator.token]) == []


async def test_reprs_and_errors_hide_credentials(emulator: Emulator) -> None:
    client = RelayClient(**client_kwargs(emulator))
    settings = client._settings
    for text in (
        repr(client),
        str(client),
        repr(settings),
        repr(settings.credentials),
        str(settings.credentials),
    ):
        assert emulator.token not in text
    jwt_settings = RelayClient(
        **client_kwargs(emulator, project=None, token=None), jwt_token=emulator.jwt
    )._settings
    assert emulator.jwt not in repr(jwt_settings) and emulator.jwt not in repr(jwt_settings.credentials)

    bad = RelayClient(**client_kwargs(emulator, token="bad-" + emulator.token))
    with pytest.raises(AuthenticationError) as info:
        await bad.connect()
    await bad.disconnect()
    error = info.value
    for text in (str(error), repr(error), error.message, repr(error.data)):
        assert leaks(text, [emulator.token]) == []
    jwt_bad = RelayClient(**client_kwargs(emulator, project=None, token=None), jwt_token=emulator.jwt + "x")
    with pytest.raises(AuthenticationError) as info:
        await jwt_bad.connect()
    await jwt_bad.disconnect()
    assert leaks(str(info.value) + repr(info.value.data), [emulator.jwt]) == []
