"""``relay-actors emulator`` / ``python -m relay_actors.emulator``: run until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Sequence

from ..errors import ConfigError
from .config import EmulatorConfig, parse_durations
from .control import CONTROL_TOKEN_ENV
from .emulator import Emulator

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relay-actors emulator", description="Run the RELAY emulator.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="WebSocket port (0 = any free port)")
    p.add_argument("--control-port", type=int, default=0, help="control API port (0 = any free port)")
    p.add_argument("--control-host", help="control API bind address (default: --host)")
    p.add_argument(
        "--control-token",
        default=os.environ.get(CONTROL_TOKEN_ENV) or None,
        help=f"bearer token the control API requires (else ${CONTROL_TOKEN_ENV}); "
        "needed when the control API is not on loopback",
    )
    p.add_argument("--tls", action="store_true", help="serve wss:// with a generated self-signed CA")
    p.add_argument("--project", help="accepted project id (default: a new UUID)")
    p.add_argument("--token", help="accepted API token (default: generated)")
    p.add_argument("--ping-interval", type=float, default=15.0, help="seconds between server pings (0 = off)")
    p.add_argument("--durations", default="", help="e.g. play=0.2,record=0.5 (see config.py)")
    p.add_argument("--ring-timeout", type=float, default=30.0, help="seconds before an unanswered offer ends")
    p.add_argument("--resume-grace", type=float, default=60.0, help="seconds a detached session is kept")
    p.add_argument("--no-journal", action="store_true", help="do not record frames (benchmarks)")
    p.add_argument(
        "--strict-commands",
        action="store_true",
        help="refuse a second calling.answer on a call (409), as a stricter service might",
    )
    p.add_argument(
        "--messages-before-result",
        action="store_true",
        help="send messaging.state events before the messaging.send result",
    )
    return p


async def _run(args: argparse.Namespace) -> int:
    config = EmulatorConfig(
        ping_interval=args.ping_interval,
        ring_timeout=args.ring_timeout,
        resume_grace=args.resume_grace,
        journal=not args.no_journal,
        message_states_before_result=args.messages_before_result,
        strict_commands=args.strict_commands,
    )
    config.durations.update(parse_durations(args.durations))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        tls=args.tls,
        project=args.project,
        token=args.token,
        control_host=args.control_host,
        control_token=args.control_token,
        config=config,
    ) as emulator:
        sys.stdout.write(json.dumps(emulator.info()) + "\n")
        sys.stdout.flush()
        await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; returns the exit status."""
    args = _parser().parse_args(argv)
    if bool(args.project) != bool(args.token):
        print("relay-actors emulator: give both --project and --token, or neither", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"relay-actors emulator: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Binding failed (port taken, address not local): one line, not a traceback.
        hint = (
            "pick another --port/--control-port, or 0 for any free port"
            if exc.errno == errno.EADDRINUSE
            else "check --host (a local address such as 127.0.0.1) and the ports"
        )
        print(
            f"relay-actors emulator: cannot listen on {args.host} (port {args.port}, control port "
            f"{args.control_port}): {exc.strerror or exc}: {hint}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
