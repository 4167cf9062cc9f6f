"""RecentIds: the last N distinct ids, oldest forgotten first, against a plain list as the model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_actors.protocol.recent_ids import RecentIds

ids = st.sampled_from([f"id{i}" for i in range(8)])
ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["seen_before", "remember", "contains"]), ids),
        st.tuples(st.just("resize"), st.integers(1, 6)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 6), steps=ops)
def test_recent_ids_behaves_as_a_list_of_the_last_n_distinct_ids(size: int, steps: list) -> None:
    recent = RecentIds(size)
    model: list[str] = []  # oldest first
    for op, arg in steps:
        if op == "resize":
            recent.size = size = arg
            continue
        expected = arg in model
        if op == "contains":
            assert (arg in recent) is expected
            continue
        got = recent.seen_before(arg) if op == "seen_before" else recent.remember(arg)
        if op == "seen_before":
            assert got is expected
        if not expected:
            model.append(arg)
            del model[: max(0, len(model) - size)]
        assert len(recent) == len(model)
        assert all(i in recent for i in model)
        assert not any(i in recent for i in {f"id{n}" for n in range(8)} - set(model))


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
