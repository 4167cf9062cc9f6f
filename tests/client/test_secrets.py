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


async def test_emulator_ready_line_is_the_only_place_its_secrets_appear() -> None:
    """The emulator prints its credentials on purpose (the ready line, for local use); nothing
    else it writes — DEBUG logs of connects, rejections, resumes and control requests — holds them."""
    import asyncio
    import json
    import signal
    import sys

    import aiohttp

    from relay_actors.emulator.testing import RawClient

    token, control_token = "PT" + "k" * 30 + "TOKEN", "CT" + "c" * 30 + "CTRL"
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "from relay_actors.emulator.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        "--project",
        "proj-1",
        "--token",
        token,
        "--control-token",
        control_token,
        "--ping-interval",
        "0.05",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert (ready["token"], ready["control_token"]) == (token, control_token)
        secrets = [token, control_token, ready["jwt"]]
        client = await RawClient(ready["url"]).open()
        try:
            await client.connect("proj-1", token, contexts=["office"])
            await wait_until(lambda: client.authorization_state, timeout=10)
            state = client.authorization_state
            assert state is not None
            secrets.append(state)
            await wait_until(
                lambda: any(f.get("method") == "signalwire.ping" for f in client.frames), timeout=10
            )
        finally:
            await client.close()
        resumed = await RawClient(ready["url"]).open()
        try:
            await resumed.connect("proj-1", token, protocol=client.protocol, authorization_state=state)
        finally:
            await resumed.close()
        for bad in ({"project": "proj-1", "token": "bad-" + token}, {"jwt": ready["jwt"] + "x"}):
            rejected = await RawClient(ready["url"]).open()
            try:
                answer = await rejected.call(
                    "signalwire.connect",
                    {"version": {"major": 2, "minor": 0, "revision": 0}, "authentication": bad},
                )
                assert "error" in answer and leaks(json.dumps(answer), secrets) == []
            finally:
                await rejected.close()
        async with aiohttp.ClientSession(base_url=ready["control_url"]) as http:
            for headers in ({}, {"Authorization": "Bearer " + control_token[:-1]}):
                async with http.get("/stats", headers=headers) as response:
                    assert response.status == 401 and leaks(await response.text(), secrets) == []
            auth = {"Authorization": "Bearer " + control_token}
            async with http.get(f"/journal?session={client.protocol}", headers=auth) as response:
                assert response.status == 200 and leaks(await response.text(), secrets) == []
            async with http.post("/calls", json={"context": "office"}, headers=auth) as response:
                assert response.status == 200
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0
    logs = stderr.decode()
    assert "DEBUG" in logs and "relay_actors.emulator.websockets" in logs  # DEBUG was really on
    assert stdout.decode().strip() == ""  # nothing after the ready line
    assert leaks(logs, secrets) == []
