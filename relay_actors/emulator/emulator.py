"""In-process emulator: ``async with Emulator(tls=True) as emu: ...``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .auth import Credentials
from .config import EmulatorConfig
from .control import ControlApi, check_control_bind
from .core import EmulatorCore
from .server import RelayServer
from .tls import generate_tls_files

__all__ = ["Emulator"]


class Emulator:
    """A running RELAY emulator: WebSocket endpoint, HTTP control API and direct control.

    Attributes (valid once started): ``url``, ``host``, ``control_url``, ``ca_file``,
    ``project``, ``token``, ``jwt``, ``control_token``, and ``core`` — the
    :class:`EmulatorCore` whose methods are the same operations as the HTTP control API.

    The control API listens on ``control_host`` (default: ``host``); anywhere but
    loopback it needs a ``control_token``, required then as ``Authorization: Bearer``.

    Raises:
        ConfigError: a non-loopback control host without a control token.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        tls: bool = False,
        project: str | None = None,
        token: str | None = None,
        control_host: str | None = None,
        control_token: str | None = None,
        config: EmulatorConfig | None = None,
        **config_fields: Any,
    ) -> None:
        self._control_host = control_host or host
        #: Bearer token of the control API (None: loopback only, no token).
        self.control_token = control_token or None
        check_control_bind(self._control_host, self.control_token)
        self.config = config or EmulatorConfig()
        if config_fields:
            self.config.update(config_fields)
        self.project = project or str(uuid.uuid4())
        self.token = token or f"PT{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"
        self.core = EmulatorCore(self.config, Credentials(self.project, self.token))
        self._bind_host = host
        self._port = port
        self._control_port = control_port
        self.tls = tls
        self.ca_file: str | None = None
        self.jwt = self.core.credentials.make_jwt(self.project, ttl=7 * 24 * 3600)
        self._tmpdir: str | None = None
        self._server: RelayServer | None = None
        self._control: ControlApi | None = None
        self._background: list[asyncio.Task[Any]] = []

    @property
    def port(self) -> int:
        """The WebSocket port."""
        assert self._server is not None, "emulator not started"
        return self._server.port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as the SDKs take it."""
        return f"{self._bind_host}:{self.port}"

    @property
    def url(self) -> str:
        """``ws://`` or ``wss://`` URL of the RELAY endpoint."""
        return f"{'wss' if self.tls else 'ws'}://{self.host}"

    @property
    def control_url(self) -> str:
        """Base URL of the HTTP control API."""
        assert self._control is not None, "emulator not started"
        host = f"[{self._control_host}]" if ":" in self._control_host else self._control_host
        return f"http://{host}:{self._control.port}"

    def info(self) -> dict[str, Any]:
        """The ready line's content (credentials included on purpose: it is for local use).
        ``control_token`` appears only when one is set."""
        info = {
            "url": self.url,
            "host": self.host,
            "control_url": self.control_url,
            "ca_file": self.ca_file,
            "project": self.project,
            "token": self.token,
            "jwt": self.jwt,
        }
        if self.control_token:
            info["control_token"] = self.control_token
        return info

    async def start(self) -> Emulator:
        """Generate TLS files if needed, then listen."""
        ssl_context = None
        if self.tls:
            self._tmpdir = tempfile.mkdtemp(prefix="relay-emulator-")
            files = generate_tls_files(Path(self._tmpdir))
            self.ca_file = str(files.ca_file)
            ssl_context = files.server_context()
        self._server = RelayServer(self.core, self._bind_host, self._port, ssl_context)
        await self._server.start()
        self._control = ControlApi(
            self.core, self.info, bind_host=self._control_host, token=self.control_token
        )
        await self._control.start(self._control_port)
        self._background = [
            asyncio.get_running_loop().create_task(self.core.ping_loop()),
            asyncio.get_running_loop().create_task(self.core.expire_detached()),
        ]
        return self

    async def stop(self) -> None:
        """Stop everything and remove generated files."""
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._control is not None:
            await self._control.stop()
        if self._server is not None:
            await self._server.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
