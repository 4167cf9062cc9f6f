"""SIGNALWIRE_CREDENTIALS_FILE: the driver's credentials from a file (JSON or env style)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from relay_actors.config import resolve_settings
from relay_actors.credentials_file import read_credentials_file
from relay_actors.errors import ConfigError


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "creds"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_env_style_file_fills_in_the_settings(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "# SignalWire\nexport SIGNALWIRE_PROJECT_ID=proj\nSIGNALWIRE_API_TOKEN='PTsecret'\n\n"
        'SIGNALWIRE_SPACE="example.signalwire.com"\n',
    )
    found = read_credentials_file(path)
    assert found == {
        "SIGNALWIRE_PROJECT_ID": "proj",
        "SIGNALWIRE_API_TOKEN": "PTsecret",
        "SIGNALWIRE_SPACE": "example.signalwire.com",
    }


def test_json_file_through_resolve_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, '{"project": "proj", "token": "PTsecret", "space": "example.signalwire.com:8443"}')
    for name in ("SIGNALWIRE_PROJECT_ID", "SIGNALWIRE_API_TOKEN", "SIGNALWIRE_JWT_TOKEN", "SIGNALWIRE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIGNALWIRE_CREDENTIALS_FILE", path)
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", "from-the-environment")
    settings = resolve_settings()
    assert settings.credentials.project == "proj"
    assert settings.credentials.token == "PTsecret", "the file named on purpose wins"
    assert settings.host == "example.signalwire.com:8443"
    # Actors resolve with an explicit (empty) environment: never the file.
    with pytest.raises(ConfigError):
        resolve_settings(env={"SIGNALWIRE_CREDENTIALS_FILE": path})


def test_bad_files_say_what_is_wrong_without_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read_credentials_file(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_credentials_file(_file(tmp_path, '{"token": PTsecret'))
    with pytest.raises(ConfigError, match="line 2: expected NAME=value") as bad_line:
        read_credentials_file(_file(tmp_path, "SIGNALWIRE_PROJECT_ID=p\nPTsecret\n"))
    assert "PTsecret" not in str(bad_line.value)
    with pytest.raises(ConfigError, match="unknown setting 'passwd'"):
        read_credentials_file(_file(tmp_path, "passwd=PTsecret\n"))
    with caplog.at_level(logging.WARNING, logger="relay_actors.credentials_file"):
        read_credentials_file(_file(tmp_path, "SIGNALWIRE_API_TOKEN=x\n", mode=0o644))
    assert "readable by every user" in caplog.text
