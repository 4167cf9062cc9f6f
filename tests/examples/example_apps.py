"""The examples-as-Ray-jobs test's cases and checks (``test_examples_on_ray.py``), read from
the emulator's journal. The in-process example tests use the test kit instead
(``test_example_apps.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relay_actors.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]


def _frames(frame: Any) -> Iterator[dict[str, Any]]:
    for item in frame if isinstance(frame, list) else [frame]:
        if isinstance(item, dict):
            yield item


def commands(emu: Emulator, call_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The RELAY commands the app sent for one call, in order (from every session's journal)."""
    found = []
    for entries in emu.core.journal.frames().values():
        for entry in entries:
            if entry["dir"] != "in":
                continue
            for frame in _frames(entry["frame"]):
                params = frame.get("params") or {}
                if isinstance(params, dict) and params.get("call_id") == call_id and "method" in frame:
                    found.append((entry["t"], frame["method"], params))
    return [(method, params) for _, method, params in sorted(found, key=lambda x: x[0])]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def call_state(emu: Emulator, call_id: str) -> dict[str, Any]:
    return next(c for c in emu.core.list_calls() if c["call_id"] == call_id)


def ended(emu: Emulator, call_ids: list[str]) -> bool:
    return all(call_state(emu, c)["state"] == "ended" for c in call_ids)


def methods(emu: Emulator, call_id: str) -> list[str]:
    return [method for method, _ in commands(emu, call_id)]


def transferred_to(emu: Emulator, call_id: str) -> list[str]:
    return [
        device["params"]["to_number"]
        for method, params in commands(emu, call_id)
        if method == "calling.connect"
        for group in params["devices"]
        for device in group
    ]


# --- the IVR ------------------------------------------------------------------------------

SALES, SUPPORT = "+15550100099", "+15550100098"
#: What each caller does; ``check_ivr_routes`` says how the IVR must have routed them.
IVR_CASES = {
    "sales": [{"digits": "1"}],
    "support": [{"digits": "2#"}],
    "voicemail": [{"digits": "3"}],
    "retry-then-voicemail": [{"digits": "9"}, {"silence": True}, {"digits": "3"}],
    "nothing": [{"silence": True}, {"no_match": True}, {"digits": "7"}],
}


def ivr_bridged(emu: Emulator, call_id: str) -> bool:
    """The call was transferred and is up: the caller may hang up now."""
    return bool(transferred_to(emu, call_id)) and call_state(emu, call_id)["state"] == "answered"


def check_ivr_routes(emu: Emulator, calls: dict[str, str]) -> None:
    assert transferred_to(emu, calls["sales"]) == [SALES]
    assert transferred_to(emu, calls["support"]) == [SUPPORT]
    for name in ("voicemail", "retry-then-voicemail", "nothing"):
        assert transferred_to(emu, calls[name]) == [], name
    prompts = {name: methods(emu, c).count("calling.play_and_collect") for name, c in calls.items()}
    assert prompts == {"sales": 1, "support": 1, "voicemail": 1, "retry-then-voicemail": 3, "nothing": 3}
    recorded = {name: "calling.record" in methods(emu, c) for name, c in calls.items()}
    assert recorded == {
        "sales": False, "support": False, "voicemail": True, "retry-then-voicemail": True, "nothing": False,
    }  # fmt: skip
    for name in ("voicemail", "retry-then-voicemail", "nothing"):
        # The app said goodbye and hung up (not the caller, not an error).
        assert methods(emu, calls[name])[-1] == "calling.end", name
        assert call_state(emu, calls[name])["end_reason"] == "hangup", name


# --- the dialer ---------------------------------------------------------------------------

#: The campaign's numbers: the outcome expected, and what each callee does.
DIALER_CASES = {
    "+15552220001": ("human", {"detect": ["HUMAN"]}),
    "+15552220002": ("machine", {"detect": ["MACHINE", "READY"]}),
    "+15552220003": ("no-answer", {"dial": "no-answer"}),
    "+15552220004": ("no-answer", {"dial": "busy"}),
    "+15552220005": ("unknown", {"detect": ["UNKNOWN"]}),
    "+15552220006": ("human", {"detect": ["HUMAN"]}),
    "+15552220007": ("machine", {"detect": ["MACHINE", "READY"]}),
}


def dialer_config() -> dict[str, Any]:
    """The emulator configuration that makes each callee behave as ``DIALER_CASES`` says."""
    return {
        "dial_outcomes": {n: case["dial"] for n, (_, case) in DIALER_CASES.items() if "dial" in case},
        "detect_outcomes": {n: case["detect"] for n, (_, case) in DIALER_CASES.items() if "detect" in case},
    }


def write_numbers(path: Path) -> None:
    path.write_text(
        "# the test's campaign\n" + "".join(f"{n}  # {o}\n" for n, (o, _) in DIALER_CASES.items())
    )


def check_dialer_results(emu: Emulator, results: list[dict[str, Any]], concurrency: int) -> None:
    """One result per number, the outcome each callee called for, the concurrency limit held,
    and each answered call screened (detect), given its message (play) and hung up."""
    assert sorted(r["number"] for r in results) == sorted(DIALER_CASES), results
    assert {r["number"]: r["outcome"] for r in results} == {n: o for n, (o, _) in DIALER_CASES.items()}
    spans = [(r["started"], r["ended"]) for r in results]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= concurrency
    for r in results:
        if r["outcome"] != "no-answer":
            assert methods(emu, r["call_id"]) == ["calling.detect", "calling.play", "calling.end"], r


# --- the SMS auto-responder -------------------------------------------------------------

#: Sender -> body of the inbound messages; replies to the third are not delivered.
RESPONDER_INBOUND = {"+15553330001": "hours please", "+15553330002": "STOP", "+15553330003": "hello?"}
RESPONDER_CONFIG = {"message_outcomes": {"+15553330003": "undelivered"}}


def check_responder_replies(replies: list[dict[str, Any]], message_ids: dict[str, str | None]) -> None:
    """Every inbound message answered once, by keyword, its reply followed to the carrier's verdict."""
    by_sender = {r["from"]: r for r in replies}
    assert len(replies) == len(by_sender) == len(RESPONDER_INBOUND), replies
    assert {n: r["message_id"] for n, r in by_sender.items()} == message_ids
    assert {n: r["keyword"] for n, r in by_sender.items()} == {
        "+15553330001": "HOURS", "+15553330002": "STOP", "+15553330003": "",
    }  # fmt: skip
    assert {n: r["state"] for n, r in by_sender.items()} == {
        "+15553330001": "delivered", "+15553330002": "delivered", "+15553330003": "undelivered",
    }  # fmt: skip
    assert all(r["reply_id"] for r in replies)
