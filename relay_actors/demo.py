"""``relay-actors demo``: the embedded RELAY emulator plus a small IVR, on a local Ray.

It starts the emulator in this process (real WebSockets on 127.0.0.1), starts a
local Ray kept on loopback (or attaches to ``RAY_ADDRESS``), and serves the IVR
with ``RelayClient(runtime="ray")``: the connection actor owns the socket, the
router admits calls, and the handlers run in CallActors. Inbound calls go
through the IVR (answer, greet, collect a digit, record, hang up); the driver
dials out and sends messages; an inbound message is answered from a CallActor.
``--runtime local`` runs the same handlers in this process instead. It prints a
summary and exits non-zero if any flow failed, so it doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import eventloop
from .backoff import Backoff
from .call import Call
from .client import RelayClient
from .emulator import Emulator
from .message import Message
from .ray_runtime import RayOptions

log = logging.getLogger("relay_actors.demo")

PHONE = {"type": "phone", "params": {"from_number": "+15550100001", "to_number": "+15550100002"}}
DURATIONS = {"play": 0.2, "record": 0.3, "collect": 0.2, "ring": 0.05, "answer": 0.02, "message": 0.02}


async def ivr(call: Call) -> None:
    """The demo's call flow: what a user's ``on_call`` handler looks like."""
    await call.answer()
    greeting = await call.play_tts("Welcome to relay-actors.")
    await greeting.wait(timeout=10)
    menu = await call.prompt_tts("Press a key.", {"digits": {"max": 1, "digit_timeout": 5}})
    choice = await menu.wait(timeout=10)
    if choice.params.get("result", {}).get("type") != "digit":
        raise RuntimeError(f"no digit collected: {choice.params}")
    recording = await call.record({"beep": True, "end_silence_timeout": 1})
    await recording.wait(timeout=10)
    if not recording.url:
        raise RuntimeError("the recording has no URL")
    await call.hangup()
    await call.wait_for_ended(timeout=10)


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("demo condition not met in time")
        await asyncio.sleep(0.1)


async def run_demo(
    calls: int, rate: float, dials: int, messages: int, tls: bool, runtime: str
) -> Counter[str]:
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
            runtime=runtime,
            ray_options=RayOptions(app="demo", min_call_actors=2, max_call_actors=4),
        )

        @client.on_call
        async def on_call(call: Call) -> None:
            await ivr(call)
            if runtime == "local":
                results["inbound_completed"] += 1

        @client.on_message
        async def on_message(message: Message) -> None:
            # Runs in a CallActor on Ray: ``client`` there is a proxy to the connection actors.
            await client.send_message(
                to_number=message.from_number, from_number=message.to_number, body="got it, thanks"
            )

        async def completed() -> int:
            if runtime == "local":
                return results["inbound_completed"]
            stats = await client.ray_stats()
            actors = stats["call_actors"]
            results["handler_errors"] = sum(a.get("handler_errors", 0) for a in actors)
            return sum(a.get("handlers_completed", 0) for a in actors)

        started = time.monotonic()
        async with client:
            print(f"emulator at {emulator.url}; {runtime} runtime up in {time.monotonic() - started:.1f}s")
            emulator.core.inject_calls("demo", calls, rate=rate)
            for _ in range(dials):
                call: Any = await client.dial([[PHONE]], dial_timeout=10)
                results["dialed_answered"] += 1
                await call.hangup()
            for i in range(messages):
                sent = await client.send_message(
                    to_number="+15550100002", from_number="+15550100001", body=f"demo message {i}"
                )
                await sent.wait(timeout=10)
                results[f"message_{sent.state}"] += 1
            before = emulator.core.messaging.sent
            emulator.core.messaging.inject("demo", body="hello from the far side")

            async def replied() -> bool:
                return emulator.core.messaging.sent > before

            await _until(replied, 15)
            results["message_replied"] += 1

            async def all_done() -> bool:
                return await completed() + results["handler_errors"] >= calls

            await _until(all_done, 30 + calls / max(rate, 0.1))
            results["inbound_completed"] = await completed()
            if runtime == "ray":
                stats = await client.ray_stats()
                for actor in stats["call_actors"]:
                    results[f"calls_on_call_actor_{actor['index']}"] = actor.get("handlers_completed", 0)
                results["router.double_assignments"] = stats["router"].get("double_assignments", 0)
            else:
                results.update({f"client.{k}": v for k, v in client.stats().items() if isinstance(v, int)})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay-actors demo", description=__doc__)
    parser.add_argument("--calls", type=int, default=20, help="inbound calls to inject (default 20)")
    parser.add_argument("--rate", type=float, default=10.0, help="inbound calls per second (default 10)")
    parser.add_argument("--dials", type=int, default=3, help="outbound calls (default 3)")
    parser.add_argument("--messages", type=int, default=3, help="outbound messages (default 3)")
    parser.add_argument("--tls", action="store_true", help="use wss:// with the emulator's generated CA")
    parser.add_argument(
        "--runtime",
        choices=["ray", "local"],
        default="ray",
        help="ray (default: a local Ray, or RAY_ADDRESS) or local (in-process)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    demo = run_demo(args.calls, args.rate, args.dials, args.messages, args.tls, args.runtime)
    results = eventloop.run(demo)
    if args.runtime == "ray":
        import ray

        ray.shutdown()
    elapsed = time.monotonic() - started
    print(f"\n{'result':<32}{'count':>8}")
    for key in sorted(results):
        print(f"{key:<32}{results[key]:>8}")
    ok = (
        results["inbound_completed"] == args.calls
        and results["handler_errors"] == 0
        and results["dialed_answered"] == args.dials
        and results["message_delivered"] == args.messages
        and results["message_replied"] == 1
    )
    print(f"\ndemo {'OK' if ok else 'FAILED'} in {elapsed:.1f}s")
    return 0 if ok else 1
