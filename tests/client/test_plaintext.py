"""``ws://`` sends the token in clear: refused for any host that is not loopback unless the
caller opts in explicitly (``allow_insecure=True`` or ``SIGNALWIRE_RELAY_ALLOW_INSECURE=1``)."""

from __future__ import annotations

import logging

import pytest

from relay_actors import RelayClient
from relay_actors.config import is_loopback, resolve_settings
from relay_actors.emulator import Emulator
from relay_actors.errors import ConfigError

from .conftest import client_kwargs

LOOPBACK = [
    "127.0.0.1",
    "127.0.0.1:8080",
    "127.9.8.7:1",
    "localhost",
    "LOCALHOST:443",
    "localhost.",
    "::1",
    "[::1]:8443",
]
REMOTE = [
    "example.signalwire.com",
    "example.signalwire.com:443",
    "10.0.0.1:80",
    "0.0.0.0:80",
    "128.0.0.1",
    "[::2]:443",
    "localhost.example.com",
    "127.0.0.1.nip.io",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_ws_to_loopback_is_accepted(host: str) -> None:
    assert is_loopback(host)
    assert resolve_settings("p", "t", host=host, scheme="ws", env={}).url == f"ws://{host}"


@pytest.mark.parametrize("host", REMOTE)
def test_ws_to_any_other_host_is_refused_naming_the_opt_in(host: str) -> None:
    """Old code: accepted, and the token went out in clear."""
    assert not is_loopback(host)
    with pytest.raises(ConfigError) as info:
        resolve_settings("p", "t", host=host, scheme="ws", env={})
    message = str(info.value)
    assert (
        host in message
        and "allow_insecure=True" in message
        and "SIGNALWIRE_RELAY_ALLOW_INSECURE=1" in message
    )
    assert "'t'" not in message  # the token is not echoed
    # wss to the same host is fine.
    assert resolve_settings("p", "t", host=host, env={}).scheme == "wss"


def test_explicit_opt_in_by_argument_or_env(caplog: pytest.LogCaptureFixture) -> None:
    host = "relay.example.com"
    with caplog.at_level(logging.WARNING, logger="relay_actors.config"):
        assert resolve_settings("p", "t", host=host, scheme="ws", allow_insecure=True, env={}).scheme == "ws"
    assert "plaintext" in caplog.text and host in caplog.text
    env = {"SIGNALWIRE_RELAY_ALLOW_INSECURE": "1"}
    assert resolve_settings("p", "t", host=host, scheme="ws", env=env).scheme == "ws"
    # The argument wins over the environment, as everywhere else.
    with pytest.raises(ConfigError):
        resolve_settings("p", "t", host=host, scheme="ws", allow_insecure=False, env=env)
    with pytest.raises(ConfigError):
        resolve_settings("p", "t", host=host, scheme="ws", env={"SIGNALWIRE_RELAY_ALLOW_INSECURE": "0"})


def test_a_stray_scheme_variable_cannot_send_the_token_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case of the issue: one stray SIGNALWIRE_RELAY_SCHEME=ws with a real space."""
    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", "proj")
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", "PTsecret")
    monkeypatch.setenv("SIGNALWIRE_SPACE", "example.signalwire.com")
    monkeypatch.setenv("SIGNALWIRE_RELAY_SCHEME", "ws")
    with pytest.raises(ConfigError) as info:
        RelayClient(contexts=["office"])
    assert "SIGNALWIRE_RELAY_SCHEME" in str(info.value) and "PTsecret" not in str(info.value)
    monkeypatch.setenv("SIGNALWIRE_RELAY_ALLOW_INSECURE", "1")
    assert RelayClient(contexts=["office"]).host == "example.signalwire.com"
    monkeypatch.delenv("SIGNALWIRE_RELAY_ALLOW_INSECURE")
    assert RelayClient(contexts=["office"], allow_insecure=True).host == "example.signalwire.com"


async def test_ws_to_the_local_emulator_still_connects(emulator: Emulator) -> None:
    async with RelayClient(**client_kwargs(emulator, scheme="ws")) as client:
        assert client.connected and emulator.host.startswith("127.")


def test_the_scheme_comes_from_the_argument_else_the_given_environment() -> None:
    env = {"SIGNALWIRE_RELAY_SCHEME": "ws"}
    assert resolve_settings("p", "t", None, "127.0.0.1:9", ["a"], env=env).scheme == "ws"
    assert resolve_settings("p", "t", None, "127.0.0.1:9", ["a"], scheme="wss", env=env).scheme == "wss"
    # An actor resolves with env={}: a stray variable of its process changes nothing.
    assert resolve_settings("p", "t", None, "127.0.0.1:9", ["a"], env={}).scheme == "wss"
    with pytest.raises(ConfigError, match="SIGNALWIRE_RELAY_SCHEME"):
        resolve_settings("p", "t", None, "127.0.0.1:9", ["a"], env={"SIGNALWIRE_RELAY_SCHEME": "http"})
