"""``relay-actors load``: inject inbound calls through an emulator's control API at a given rate.

Prints one progress line per second to stderr (injected, answered, ended, rate)
and exits when every call was injected and has ended (or ``--timeout`` passed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

__all__ = ["main", "run_load"]

#: Seconds one control API request may take.
_HTTP_TIMEOUT = 10.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relay-actors load", description="Inject inbound calls into an emulator."
    )
    p.add_argument("--control-url", required=True, help="the emulator's control_url")
    p.add_argument(
        "--control-token", help="the control API's token, if it has one (else $RELAY_EMULATOR_CONTROL_TOKEN)"
    )
    p.add_argument("--rate", type=float, default=10.0, help="calls per second (default 10)")
    p.add_argument("--total", type=int, default=100, help="calls to inject (default 100)")
    p.add_argument("--context", default="default", help="context the calls arrive on")
    p.add_argument("--hangup-after", type=float, help="the caller hangs up N s after the answer")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after N s (default: total/rate + 30)")
    return p


async def run_load(
    control_url: str,
    *,
    rate: float,
    total: int,
    context: str,
    hangup_after: float | None = None,
    timeout: float = 0.0,
    control_token: str | None = None,
    out: Any = sys.stderr,
) -> dict[str, Any]:
    """Inject ``total`` calls at ``rate``/s and report progress; returns the final counts."""
    base = control_url.rstrip("/")
    limit = timeout or total / max(rate, 0.001) + 30.0
    started = time.monotonic()
    counts: dict[str, Any] = {}
    # Every control request has a deadline: a wrong URL must not hang the command.
    headers = {"Authorization": f"Bearer {control_token}"} if control_token else None
    deadline = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT)
    async with aiohttp.ClientSession(headers=headers, timeout=deadline) as http:

        async def stats() -> dict[str, Any]:
            async with http.get(f"{base}/stats") as response:
                response.raise_for_status()
                return await response.json()

        before = (await stats())["call_state_transitions"]
        body: dict[str, Any] = {"context": context, "count": total, "rate": rate}
        if hangup_after is not None:
            body["hangup_after"] = hangup_after
        async with http.post(f"{base}/calls", json=body) as response:
            response.raise_for_status()
        while True:
            await asyncio.sleep(1.0)
            now = (await stats())["call_state_transitions"]
            elapsed = time.monotonic() - started
            counts = {
                state: now.get(state, 0) - before.get(state, 0) for state in ("created", "answered", "ended")
            }
            injected = counts["created"]
            print(
                f"[{elapsed:6.1f}s] injected={injected} answered={counts['answered']} "
                f"ended={counts['ended']} rate={injected / elapsed:.1f}/s",
                file=out,
                flush=True,
            )
            if injected >= total and counts["ended"] >= total:
                break
            if elapsed > limit:
                break
    counts["seconds"] = time.monotonic() - started
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every call was injected, answered by someone and ended; 1 when
    calls were left over or none was answered (with a hint); 2 when the control API
    cannot be reached."""
    args = _parser().parse_args(argv)
    try:
        counts = asyncio.run(
            run_load(
                args.control_url,
                rate=args.rate,
                total=args.total,
                context=args.context,
                hangup_after=args.hangup_after,
                timeout=args.timeout,
                control_token=args.control_token or os.environ.get("RELAY_EMULATOR_CONTROL_TOKEN"),
            )
        )
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        print(
            f"relay-actors load: cannot use the control API at {args.control_url!r} ({reason}): pass the "
            "control_url of the ready line of 'relay-actors emulator' (e.g. http://127.0.0.1:PORT)",
            file=sys.stderr,
        )
        return 2
    if args.total > 0 and counts.get("answered", 0) == 0:
        print(
            f"relay-actors load: no call was answered: is a client receiving context {args.context!r} "
            f"on this emulator (RelayClient(contexts=[{args.context!r}]) with an on_call handler that "
            "answers)? Calls on a context nobody receives end at once",
            file=sys.stderr,
        )
        return 1
    return 0 if counts.get("created", 0) >= args.total and counts.get("ended", 0) >= args.total else 1


if __name__ == "__main__":
    sys.exit(main())
