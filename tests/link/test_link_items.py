"""The link items' codec: every item survives the wire, and nothing a peer sends crashes it.

What the link carries is JSON (orjson), so the round trip goes through orjson too; any
JSON value a (buggy or hostile, but authenticated) peer sends decodes to an item or
raises :class:`MalformedItem`, never anything else.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_actors.errors import RelayError
from relay_actors.ray_runtime import actor_messages as m

text = st.text(max_size=12)
number = st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
json_scalar = st.none() | st.booleans() | number | text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
params = st.dictionaries(text, json_value, max_size=4)
stamp = st.floats(allow_nan=False, allow_infinity=False, width=64)
maybe_id = st.none() | text
offers = st.builds(m.OfferItem, text, params, maybe_id, st.none() | st.lists(json_value, max_size=4))

items = st.one_of(
    offers,
    st.builds(m.EventItem, text, text, params, stamp, maybe_id),
    st.builds(m.LegItem, text, params),
    st.builds(m.DialItem, text, st.booleans(), params),
    st.builds(m.ResultItem, text, params),
    st.builds(m.FailureItem, text, st.integers(-1000, 1000) | text, text, json_value),
    st.builds(m.MsgInItem, params),
    st.builds(m.MsgStateItem, text, params, stamp),
    st.builds(m.LostItem, text, text),
    st.builds(m.AdoptItem, text, params),
    st.just(m.ResumedItem()),
    st.builds(m.RequestItem, text, text, params),
    st.builds(m.RefusedItem, st.lists(offers, max_size=3).map(tuple)),
    st.builds(m.DialAbandonedItem, text),
)


@settings(max_examples=150, deadline=None)
@given(items)
def test_every_item_survives_the_wire(item: m.Item) -> None:
    wire = orjson.loads(orjson.dumps(m.encode(item)))
    assert m.decode(wire) == item
    assert m.decode(m.encode(item)) == item


def _decode_or_malformed(value: Any) -> None:
    try:
        item = m.decode(value)
    except m.MalformedItem as exc:
        assert exc.code == -1 and exc.failure == "malformed_item" and exc.message
    else:
        assert m.decode(m.encode(item)) == item


@settings(max_examples=150, deadline=None)
@given(json_value)
def test_any_json_value_is_an_item_or_malformed_never_a_crash(value: Any) -> None:
    _decode_or_malformed(value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(m.WIRE_KINDS)), st.lists(json_value, max_size=6))
def test_a_known_kind_with_any_fields_is_an_item_or_malformed(kind: str, fields: list[Any]) -> None:
    _decode_or_malformed([kind, *fields])


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {},
        "offer",
        None,
        [None],
        [7, "c1"],
        ["nope", 1],
        ["offer", "c1"],
        ["offer", "c1", [], "e1"],  # params not a dict
        ["offer", 5, {}, "e1"],
        ["offer", "c1", {}, "e1", "not-a-trace"],
        ["event", "c1", "calling.call.state", {}, "soon", "e1"],  # timestamp not a number
        ["event", "c1", "calling.call.state", {}, True, "e1"],  # a bool is not a timestamp
        ["result", "r1", True, [1, 2]],
        ["result", "r1", False, {"code": 1}],
        ["result", "r1", False, [[], "m", None]],
        ["result", "r1", "yes", {}],
        ["refused", [["event", "c1", "t", {}, 0, None]]],  # only offers are refused
        ["refused", ["offer"]],
        ["resumed", 1],
        ["req", "r1", "calling.answer"],
    ],
)
def test_malformed_arrays_raise_a_typed_error(wire: Any) -> None:
    with pytest.raises(m.MalformedItem) as caught:
        m.decode(wire)
    assert isinstance(caught.value, RelayError) and caught.value.failure == "malformed_item"


def test_the_wire_forms_are_the_documented_arrays() -> None:
    assert m.encode(m.OfferItem("c1", {"a": 1}, "e1")) == ["offer", "c1", {"a": 1}, "e1"]
    assert m.encode(m.OfferItem("c1", {}, None, [])) == ["offer", "c1", {}, None, []]
    assert m.encode(m.EventItem("c1", "t", {}, 1.5, "e1")) == ["event", "c1", "t", {}, 1.5, "e1"]
    assert m.encode(m.ResultItem("r1", {"code": "200"})) == ["result", "r1", True, {"code": "200"}]
    assert m.encode(m.FailureItem("r1", 404, "gone")) == ["result", "r1", False, [404, "gone", None]]
    assert m.encode(m.ResumedItem()) == ["resumed"]
    assert m.encode(m.RequestItem("r1", "calling.answer", {})) == ["req", "r1", "calling.answer", {}]
    refused = m.RefusedItem((m.OfferItem("c1", {}, "e1"),))
    assert m.encode(refused) == ["refused", [["offer", "c1", {}, "e1"]]]


def test_a_failure_item_gives_the_relay_error_back() -> None:
    error = m.FailureItem("r1", 410, "call ended", {"x": 1}).error()
    assert isinstance(error, RelayError) and error.code == 410 and error.data == {"x": 1}
    assert m.FailureItem("r1", "connection_lost", "lost").error().failure == "connection_lost"


def test_only_what_a_shard_sends_decodes_as_for_a_call_actor() -> None:
    assert m.decode_to_call_actor(["lost", "c1", "session_lost"]) == m.LostItem("c1", "session_lost")
    with pytest.raises(m.MalformedItem):
        m.decode_to_call_actor(["req", "r1", "calling.answer", {}])


def test_items_are_slotted_and_frozen_for_the_type_checker() -> None:
    """Frozen is checked by mypy (a dataclass_transform with frozen_default), not at run
    time, where a frozen dataclass costs 4-5 times as much to build (see ``_item``)."""
    import dataclasses
    import typing

    item = m.LostItem("c1", "session_lost")
    assert not hasattr(item, "__dict__") and dataclasses.is_dataclass(item)
    with pytest.raises(AttributeError):
        item.other = 1  # type: ignore[attr-defined]
    if hasattr(typing, "dataclass_transform"):  # (Python 3.11+ records the marker)
        transform = m._item.__dataclass_transform__  # type: ignore[attr-defined]
        assert transform.get("frozen_default", transform["kwargs"].get("frozen_default")) is True
    assert typing.get_type_hints(m.LostItem) == {"call_id": str, "reason": str}
