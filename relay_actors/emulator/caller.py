"""What the far side of a call presses and says: scripted caller input for collects (sans-IO).

A call holds a queue of inputs; each ``calling.collect`` / ``calling.play_and_collect``
takes the next one and turns it into the collect ``result`` the way the service does
(§6.6): digits stop at ``digits.max`` or at one of ``digits.terminators``; input the
collect does not listen for (keys on a speech-only collect, speech on a digits-only
one) is ``no_input``. Inputs, one JSON object each:

- ``{"digits": "1#"}``: the keys pressed, in order (``0-9 * # A-D``);
- ``{"speech": "sales"}`` with an optional ``"confidence"`` (default 0.93);
- ``{"silence": true}``: nothing at all (``no_input``);
- ``{"no_match": true}``: something the recogniser cannot match (``no_match``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DTMF_KEYS", "collect_result", "default_input", "parse_inputs"]

#: Keys a caller can press.
DTMF_KEYS = frozenset("0123456789*#ABCD")
_DEFAULT_CONFIDENCE = 0.93


def parse_inputs(value: Any) -> list[dict[str, Any]]:
    """Validate a list of caller inputs (see the module docstring); returns it normalised.

    Raises:
        ValueError: not a list, or an item that is none of the four forms.
    """
    if not isinstance(value, list):
        raise ValueError(f"caller inputs must be a list of objects, not {type(value).__name__}")
    out: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict) or len({"digits", "speech", "silence", "no_match"} & set(item)) != 1:
            raise ValueError(
                f"caller input {item!r} must be one of {{'digits': '1#'}}, {{'speech': 'text'}}, "
                "{'silence': true}, {'no_match': true}"
            )
        if "digits" in item:
            keys = item["digits"]
            if not isinstance(keys, str) or any(k not in DTMF_KEYS for k in keys):
                raise ValueError(f"digits {keys!r} must be a string of 0-9 * # A-D")
            out.append({"digits": keys})
        elif "speech" in item:
            if not isinstance(item["speech"], str):
                raise ValueError(f"speech {item['speech']!r} must be a string")
            confidence = float(item.get("confidence", _DEFAULT_CONFIDENCE))
            out.append({"speech": item["speech"], "confidence": confidence})
        elif "silence" in item:
            out.append({"silence": True})
        else:
            out.append({"no_match": True})
    return out


def default_input(collect: dict[str, Any], digits: str, terminator: str, speech: str) -> dict[str, Any]:
    """The input of a caller nobody scripted: the configured keys then terminator, or speech."""
    if "digits" in collect or "speech" not in collect:
        return {"digits": digits + terminator}
    return {"speech": speech, "confidence": _DEFAULT_CONFIDENCE}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _digits_result(spec: dict[str, Any], keys: str) -> dict[str, Any]:
    raw_max = spec.get("max")
    limit = int(raw_max) if isinstance(raw_max, (int, float)) and raw_max > 0 else None
    raw_terminators = spec.get("terminators")
    terminators = raw_terminators if isinstance(raw_terminators, str) else ""
    collected, terminator = "", ""
    for index, key in enumerate(keys):
        if key in terminators:
            terminator = key
            break
        collected += key
        if limit is not None and len(collected) >= limit:
            # The caller typed on: a terminator right after the last digit is reported with it.
            following = keys[index + 1 : index + 2]
            terminator = following if following and following in terminators else ""
            break
    # Keys that ran out before max or a terminator: the digit timeout ends the collect.
    if not collected:
        return {"type": "no_input", "params": {}}
    return {"type": "digit", "params": {"digits": collected, "terminator": terminator}}


def collect_result(collect: dict[str, Any], pressed: dict[str, Any]) -> dict[str, Any]:
    """The collect ``result`` object for one caller input (a :func:`parse_inputs` item).

    ``collect``: the collect fields (``digits {max, terminators}``, ``speech``).
    """
    if pressed.get("silence"):
        return {"type": "no_input", "params": {}}
    if pressed.get("no_match"):
        return {"type": "no_match", "params": {}}
    if "digits" in pressed:
        if "digits" not in collect:
            return {"type": "no_input", "params": {}}
        return _digits_result(_obj(collect["digits"]), pressed["digits"])
    if "speech" not in collect:
        return {"type": "no_input", "params": {}}
    return {
        "type": "speech",
        "params": {"text": pressed["speech"], "confidence": pressed.get("confidence", _DEFAULT_CONFIDENCE)},
    }
