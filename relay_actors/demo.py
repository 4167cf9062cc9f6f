"""``relay-actors demo``: the embedded emulator plus a small IVR served by RelayClient.

It starts the RELAY emulator in this process (real WebSockets on 127.0.0.1),
connects a client, sends inbound calls through an IVR handler (answer, greet,
collect a digit, record, hang up), dials out, exchanges messages, and prints a
summary. It exits non-zero if any flow fails, so it doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from . import eventloop
from .backoff import Backoff
from .call import Call
from .client import RelayClient
from .emulator import Emulator
from .message import Message

log = logging.getLogger("relay_actors.demo")

PHONE = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100002"}}
DURATIONS = {"play": 0.2, "record": 0.3, "collect": 0.2, "ring": 0.05, "answer": 0.02, "message": 0.02}


async def ivr(call: Call, results: Counter[str]) -> None:
    """The demo's call flow: what a user's ``on_call`` handler looks like."""
    await call.answer()
    greeting = await call.play_tts("Welcome to relay-actors.")
    await greeting.wait(timeout=10)
    menu = await call.prompt_tts("Press a key.", {"digits": {"max": 1, "digit_timeout": 5}})
    choice = await menu.wait(timeout=10)
    results[f"digit:{choice.params.get('result', {}).get('type', 'none')}"] += 1
    recording = await call.record({"beep": True, "end_silence_timeout": 1})
    await recording.wait(timeout=10)
    results["recorded" if recording.url else "not_recorded"] += 1
    await call.hangup()
    await call.wait_for_ended(timeout=10)
    results["inbound_completed"] += 1


async def run_demo(calls: int, rate: float, dials: int, messages: int, tls: bool) -> Counter[str]:
    results: Counter[str] = Counter()
    async with Emulator(tls=tls, ping_interval=0, durations=DURATIONS) as emulator:
        client = RelayClient(
            project=emulator.project,
            token=emulator.token,
            host=emulator.host,
            contexts=["demo"],
            scheme="wss" if tls else "ws",
            ca_file=emulator.ca_file,
            backoff=Backoff(initial=0.2, cap=2.0),
        )
        inbound_done = asyncio.Event()

        @client.on_call
        async def on_call(call: Call) -> None:
            try:
                await ivr(call, results)
            finally:
                if results["inbound_completed"] >= calls:
                    inbound_done.set()

        @client.on_message
        async def on_message(message: Message) -> None:
            results["messages_received"] += 1

        async with client:
            print(f"emulator at {emulator.url}; client session {client.relay_protocol}")
            emulator.core.inject_calls("demo", calls, rate=rate)
            for _ in range(dials):
                call = await client.dial([[PHONE]], dial_timeout=10)
                results["dialed_answered"] += 1
                await call.hangup()
                await call.wait_for_ended(timeout=10)
            for i in range(messages):
                sent = await client.send_message(
                    to_number="+15550100002", from_number="+15550100001", body=f"demo message {i}"
                )
                final = await sent.wait(timeout=10)
                results[f"message_{final.params['message_state']}"] += 1
            emulator.core.messaging.inject("demo", body="hello from the far side")
            if calls:
                await asyncio.wait_for(inbound_done.wait(), timeout=30 + calls / max(rate, 0.1))
            await _until(lambda: results["messages_received"] >= 1, 10)
            results.update({f"client.{k}": v for k, v in client.stats().items() if isinstance(v, int)})
    return results


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("demo condition not met in time")
        await asyncio.sleep(0.02)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay-actors demo", description=__doc__)
    parser.add_argument("--calls", type=int, default=20, help="inbound calls to inject (default 20)")
    parser.add_argument("--rate", type=float, default=10.0, help="inbound calls per second (default 10)")
    parser.add_argument("--dials", type=int, default=3, help="outbound calls (default 3)")
    parser.add_argument("--messages", type=int, default=3, help="outbound messages (default 3)")
    parser.add_argument("--tls", action="store_true", help="use wss:// with the emulator's generated CA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    results = eventloop.run(run_demo(args.calls, args.rate, args.dials, args.messages, args.tls))
    elapsed = time.monotonic() - started
    print(f"\n{'result':<32}{'count':>8}")
    for key in sorted(results):
        print(f"{key:<32}{results[key]:>8}")
    ok = (
        results["inbound_completed"] == args.calls
        and results["dialed_answered"] == args.dials
        and results["message_delivered"] == args.messages
        and results["messages_received"] >= 1
    )
    print(f"\ndemo {'OK' if ok else 'FAILED'} in {elapsed:.1f}s")
    return 0 if ok else 1
