"""Outbound campaign dialer: dial every number of a list, at most ``DIALER_CONCURRENCY`` at
once, screen each answered call with answering-machine detection (``call.detect``), play the
message meant for a person or for a machine, and write one JSON line per number.

Run the campaign (credentials from the environment: see README.md beside this file); the
app stops once every number has its result:
    DIALER_NUMBERS=numbers.txt DIALER_RESULTS=results.jsonl \\
        relay-actors run examples.dialer.app:client --task campaign
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from relay_actors import Call, RelayClient, RelayError
from relay_actors.ray_runtime import RayOptions

log = logging.getLogger("examples.dialer")

# No contexts: the dialer only calls out.
client = RelayClient(ray_options=RayOptions(app="dialer", min_call_actors=1, max_call_actors=4))

#: Read where the campaign starts (the driver, on Ray).
NUMBERS = Path(os.environ.get("DIALER_NUMBERS", "numbers.txt")).resolve()
RESULTS = Path(os.environ.get("DIALER_RESULTS", "results.jsonl")).resolve()
CONCURRENCY = int(os.environ.get("DIALER_CONCURRENCY", "5"))
CALLER_ID = os.environ.get("DIALER_FROM", "+15550100001")
DIAL_TIMEOUT = 60.0
#: A call's screening and message, once answered, end within this (else: outcome "error").
CALL_TIMEOUT = 300.0
MESSAGES = {
    "human": "Hello! This is a reminder of your appointment tomorrow at ten. Goodbye.",
    "machine": "Hello, this is a reminder of your appointment tomorrow at ten. No need to call back.",
    "unknown": "Hello, this is a reminder of your appointment tomorrow at ten.",
}


async def screen(call: Call) -> str:
    """Answering-machine detection, then the matching message: ``human``, ``machine`` or
    ``unknown``."""
    detect = await call.detect_answering_machine(initial_timeout=4.5, timeout=30)
    result = await detect.wait(timeout=40)
    event = result.params.get("detect", {}).get("params", {}).get("event", "")
    outcome = {"HUMAN": "human", "MACHINE": "machine"}.get(event, "unknown")
    play = await call.play_tts(MESSAGES[outcome])
    await play.wait(timeout=120)
    await call.hangup()
    return outcome


async def screen_and_report(queue: Any, index: int, call: Call) -> None:
    """On Ray: runs in a CallActor; the outcome goes back to the driver over a Ray queue."""
    try:
        outcome = await screen(call)
    except Exception:
        log.exception("screening %s failed", call.call_id)
        outcome = "error"
    await queue.put_async((index, outcome, call.call_id), timeout=30)


class RayOutcomes:
    """The driver's side of the Ray queue the CallActors report to."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(maxsize=max(100, CONCURRENCY * 2), actor_options={"num_cpus": 0})
        self.waiting: dict[int, asyncio.Future[tuple[str, str]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            index, outcome, call_id = await self.queue.get_async()
            future = self.waiting.pop(index, None)
            if future is not None and not future.done():
                future.set_result((outcome, call_id))

    def expect(self, index: int) -> asyncio.Future[tuple[str, str]]:
        future = self.waiting[index] = asyncio.get_running_loop().create_future()
        return future

    async def close(self) -> None:
        self._reader.cancel()
        self.queue.shutdown()


async def dial_one(index: int, number: str, outcomes: RayOutcomes | None) -> dict[str, Any]:
    device = {"type": "phone", "params": {"from_number": CALLER_ID, "to_number": number}}
    started = time.time()
    call_id = ""
    try:
        if outcomes is None:
            call = await client.dial([[device]], dial_timeout=DIAL_TIMEOUT)
            call_id = call.call_id
            outcome = await asyncio.wait_for(screen(call), CALL_TIMEOUT)
        else:
            expected = outcomes.expect(index)
            handler = functools.partial(screen_and_report, outcomes.queue, index)
            remote = await client.dial([[device]], dial_timeout=DIAL_TIMEOUT, handler=handler)
            call_id = remote.call_id
            outcome, _ = await asyncio.wait_for(expected, CALL_TIMEOUT)
    except RelayError as exc:
        outcome = "no-answer" if exc.failure in ("dial_failed", "dial_timeout") else "error"
        if outcome == "error":
            log.warning("dialling %s: %s", number, exc)
    except asyncio.TimeoutError:
        outcome = "error"
    ended = time.time()
    return {"number": number, "outcome": outcome, "call_id": call_id, "started": started, "ended": ended}


def write_result(entry: dict[str, Any]) -> None:
    """Append one number's result (one short write: lines do not interleave)."""
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


async def campaign(client: RelayClient) -> None:
    """Dial every number of ``DIALER_NUMBERS`` (one a line, ``#`` comments), write
    ``DIALER_RESULTS`` (JSON lines, appended as calls finish)."""
    numbers = [
        line.split("#", 1)[0].strip()
        for line in NUMBERS.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    limit = asyncio.Semaphore(CONCURRENCY)
    outcomes = RayOutcomes() if client.runtime == "ray" else None
    counts: dict[str, int] = {}
    log.info("campaign: %d numbers, %d at a time", len(numbers), CONCURRENCY)

    async def one(index: int, number: str) -> None:
        async with limit:
            entry = await dial_one(index, number, outcomes)
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        write_result(entry)

    try:
        await asyncio.gather(*(one(i, n) for i, n in enumerate(numbers)))
    finally:
        if outcomes is not None:
            await outcomes.close()
    log.info("campaign done: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
