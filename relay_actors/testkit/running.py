"""The shells of the test kit: the emulator on a thread of its own, an app served by
``relay-actors run`` in a child process, and handles on the calls and messages a test
places. Tests stay synchronous (no event loop, no asyncio plugin needed): every wait
polls the emulator's journal with a deadline.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..emulator import Emulator
from ..emulator.testing import FAST_DURATIONS
from .events import call_timeline, dialed_call_ids, message_timeline
from .expect import EventSequence
from .script import callee_config, caller_options

__all__ = ["AppError", "AppProcess", "CallHandle", "MessageHandle", "ScriptedEmulator", "UnknownContextError"]

#: Frames kept per session: enough for every call a test places.
_JOURNAL_LIMIT = 100_000
_READY = "relay-actors: ready:"
_MESSAGE_OUTCOMES = frozenset({"delivered", "undelivered", "failed"})


class UnknownContextError(LookupError):
    """A call or message into a context no running app receives."""


class AppError(RuntimeError):
    """The app did not start, or stopped badly; the message holds its last output."""


class ScriptedEmulator:
    """A RELAY emulator for one test, with scripted callers (the ``relay_emulator`` fixture).

    Phases are short (``FAST_DURATIONS``): a prompt plays in 50 ms, a recording lasts
    100 ms. ``timeout`` (s) bounds every wait of the handles it returns."""

    def __init__(self, *, timeout: float = 15.0, **config: Any) -> None:
        self.timeout = timeout
        fields = {"ping_interval": 0, "durations": FAST_DURATIONS, "journal_limit": _JOURNAL_LIMIT, **config}
        self.emulator = Emulator(**fields)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay-emulator", daemon=True)

    # --- lifecycle --------------------------------------------------------------
    def start(self) -> ScriptedEmulator:
        """Start the emulator's thread and its servers."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        """Stop the servers and the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ScriptedEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the emulator's event loop (its state lives there) and return its result."""

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def app_env(self) -> dict[str, str]:
        """The environment that points an app at this emulator (credentials, ``ws://``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "RAY_ADDRESS"))}
        env.update(
            SIGNALWIRE_PROJECT_ID=self.emulator.project,
            SIGNALWIRE_API_TOKEN=self.emulator.token,
            SIGNALWIRE_SPACE=self.emulator.host,
            SIGNALWIRE_RELAY_SCHEME="ws",
        )
        return env

    # --- reading ----------------------------------------------------------------
    def journal(self) -> list[dict[str, Any]]:
        """Every frame of every session, as the control API's ``GET /journal`` shows them."""
        frames = self.on_loop(self.emulator.core.journal.frames)
        return [entry for entries in frames.values() for entry in entries]

    def contexts(self) -> list[str]:
        """The contexts the connected apps receive."""
        sessions = self.on_loop(self.emulator.core.list_sessions)
        return sorted({c for s in sessions if not s["closed"] for c in s["contexts"]})

    def _check_context(self, context: str, what: str) -> None:
        if not isinstance(context, str) or not self.on_loop(self.emulator.core.subscribers, context):
            running = ", ".join(self.contexts()) or "none (is the app started? use the relay_app fixture)"
            raise UnknownContextError(
                f"{what}: no app receives context {context!r}; the contexts received are: {running}"
            )

    # --- scripted traffic -------------------------------------------------------
    def call(self, context: str, *steps: Any, from_number: str = "+15551230001",
             to_number: str = "+15557650002") -> CallHandle:  # fmt: skip
        """A call into ``context`` from ``from_number``: the caller does ``steps``
        (``press``, ``say``, ``silence``, ``no_match``, ``hang_up``, ``machine``, ``human``).

        Raises:
            CallerScriptError: a step that makes no sense.
            UnknownContextError: no app receives ``context``.
        """
        options = caller_options(steps)
        self._check_context(context, f"relay_emulator.call({context!r})")
        call_id = self.on_loop(
            self.emulator.core.inject_calls,
            context,
            1,
            from_number=from_number,
            to_number=to_number,
            **options,
        )[0]
        return CallHandle(self, call_id, "caller", f"call {call_id} into {context!r}")

    def callee(self, number: str, *steps: Any) -> None:
        """How ``number`` behaves when the app dials it (or transfers to it): ``busy()``,
        ``no_answer()``, ``unreachable()``, else it answers; ``machine()``/``human()`` for
        detection; ``press``/``say``/... for its collects. Call it before the app dials."""
        self.on_loop(self.emulator.core.set_config, callee_config(number, steps))

    def dialed(self, number: str, nth: int = 0, timeout: float | None = None) -> CallHandle:
        """The ``nth`` call the app placed to ``number`` (waiting for it)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            found = dialed_call_ids(self.journal(), number)
            if len(found) > nth:
                return CallHandle(self, found[nth], "callee", f"call {found[nth]} to {number}")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the app placed {len(found)} call(s) to {number}, expected call {nth + 1}"
                )
            time.sleep(0.02)

    def sms(self, context: str, body: str, *, from_number: str = "+15551230001",
            to_number: str = "+15557650002", media: Sequence[str] = ()) -> MessageHandle:  # fmt: skip
        """An inbound SMS (MMS with ``media``) into ``context`` from ``from_number``.

        Raises:
            UnknownContextError: no app receives ``context``.
        """
        self._check_context(context, f"relay_emulator.sms({context!r})")
        message_id = self.on_loop(
            self.emulator.core.messaging.inject, context, from_number=from_number, to_number=to_number,
            body=body, media=list(media),
        )  # fmt: skip
        if message_id is None:
            raise UnknownContextError(f"relay_emulator.sms({context!r}): nobody received the message")
        return MessageHandle(self, message_id, from_number)

    def hang_up_all(self) -> int:
        """The far side of every live call hangs up (so an app stops without waiting for
        calls a failed test left running); how many calls that was."""

        def hang_up() -> int:
            core = self.emulator.core
            return sum(core.hangup(c["call_id"]) for c in core.list_calls() if c["state"] != "ended")

        return int(self.on_loop(hang_up))

    def delivery(self, number: str, outcome: str) -> None:
        """What becomes of messages the app sends to ``number``: ``delivered`` (the
        default), ``undelivered`` or ``failed``."""
        if outcome not in _MESSAGE_OUTCOMES:
            raise ValueError(
                f"relay_emulator.delivery({number!r}, {outcome!r}): the outcome is one of "
                + ", ".join(sorted(_MESSAGE_OUTCOMES))
            )
        self.on_loop(self.emulator.core.set_config, {"message_outcomes": {number: outcome}})

    def messages_sent(self) -> list[dict[str, Any]]:
        """Params of every ``messaging.send`` the app made, in order."""
        return [
            entry["frame"]["params"]
            for entry in sorted(self.journal(), key=lambda e: e["t"])
            if entry["dir"] == "in" and isinstance(entry["frame"], dict)
            and entry["frame"].get("method") == "messaging.send"
        ]  # fmt: skip


class CallHandle:
    """A call placed by a test or by the app: ``expect`` walks its events."""

    def __init__(self, emulator: ScriptedEmulator, call_id: str, far_side: str, what: str) -> None:
        self.emulator = emulator
        self.call_id = call_id
        heard = "what the caller heard and did" if far_side == "caller" else "what the callee heard and did"
        self.expect = EventSequence(
            lambda: call_timeline(emulator.journal(), call_id, far_side),
            what=what, heard=heard, timeout=emulator.timeout,
        )  # fmt: skip

    def hang_up(self) -> None:
        """The far side hangs up now (e.g. once a transfer is connected)."""
        if not self.emulator.on_loop(self.emulator.emulator.core.hangup, self.call_id):
            raise AssertionError(self.expect.report("cannot hang up: the call had already ended"))

    def events(self, timeout: float | None = None) -> list[Any]:
        """Wait for the end of the call; every event of it."""
        return self.expect.wait_done(timeout)


class MessageHandle:
    """An inbound message placed by a test: ``expect`` walks the replies and their delivery."""

    def __init__(self, emulator: ScriptedEmulator, message_id: str, sender: str) -> None:
        self.emulator = emulator
        self.message_id = message_id
        self.expect = EventSequence(
            lambda: message_timeline(emulator.journal(), message_id, sender),
            what=f"message {message_id} from {sender}", heard="what the sender got", timeout=emulator.timeout,
        )  # fmt: skip

    def events(self, timeout: float | None = None) -> list[Any]:
        """Wait until every reply so far has its final state; every event."""
        return self.expect.wait_done(timeout)


class AppProcess:
    """``relay-actors run TARGET`` in a child process of its own process group, pointed at
    the emulator; ``stop()`` drains it with SIGTERM and kills what is left by its pid."""

    def __init__(self, target: str, emulator: ScriptedEmulator, *args: str, ray: bool = False,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 ready_timeout: float | None = None) -> None:  # fmt: skip
        if not isinstance(target, str) or not target.partition(":")[0]:
            raise AppError(f"relay_app({target!r}): give the app as MODULE:CLIENT, e.g. 'myapp:client'")
        self.target = target
        self.ray = ray
        self.cwd = Path(cwd or os.getcwd())
        self.lines: list[str] = []
        self._ray_tmp = tempfile.mkdtemp(prefix="rtk-") if ray else None
        full_env = emulator.app_env()
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.cwd), full_env.get("PYTHONPATH")]))
        if self._ray_tmp:
            full_env.update(RAY_TMPDIR=self._ray_tmp, RAY_USAGE_STATS_ENABLED="0")
        full_env.update(env or {})
        command = [sys.executable, "-m", "relay_actors.cli", "run", target, "--metrics-port", "-1",
                   "--drain-timeout", "5", *(["--ray"] if ray else []), *args]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=self.cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: whatever it starts is killed with it
        )  # fmt: skip
        atexit.register(self.kill)  # should the test run end without stopping it
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"relay-app-{self.proc.pid}", daemon=True)
        self._reader.start()
        try:
            self.wait_for(_READY, ready_timeout or (120.0 if ray else 60.0))
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        """Everything the app printed so far (stdout and stderr)."""
        return "\n".join(self.lines)

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of output."""
        return "\n".join(self.lines[-lines:])

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """The first output line holding ``needle`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if not self._reader.is_alive():
                    errors = [line for line in self.lines if "error" in line.lower()]
                    raise AppError(
                        f"relay-actors run {self.target} exited ({self.proc.wait()}) before {needle!r}"
                        + (f": {errors[-1]}" if errors else "")
                        + f"\n--- its output ---\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AppError(f"relay-actors run {self.target}: no {needle!r} within {timeout:g}s\n"
                                   f"--- its output ---\n{self.tail()}")  # fmt: skip
                self._changed.wait(remaining)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the app to stop by itself (e.g. after ``--task``); its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AppError(
                f"relay-actors run {self.target} still running after {timeout:g}s\n{self.tail()}"
            ) from None
        self._reader.join(10)
        return code

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain), wait, then kill what is left of its process group; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill the app and every process of its group (by the group's id), remove Ray's files."""
        atexit.unregister(self.kill)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self._ray_tmp:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
