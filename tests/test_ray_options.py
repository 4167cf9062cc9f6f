"""RayOptions refuses bad settings at construction, saying what is allowed."""

from __future__ import annotations

import pytest

from relay_actors.errors import ArgumentError, RelayError
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime.actor_link import DEFAULT_LINGER, MAX_LINGER


def test_link_linger_defaults_to_none_and_a_few_ms_are_allowed() -> None:
    assert RayOptions(app="a").link_linger == DEFAULT_LINGER == 0
    assert RayOptions(app="a", link_linger=0.002).link_linger == 0.002
    assert RayOptions(app="a", link_linger=MAX_LINGER).link_linger == MAX_LINGER


@pytest.mark.parametrize("bad", [-0.001, MAX_LINGER * 2, 5])
def test_link_linger_out_of_range_is_refused_with_the_range(bad: float) -> None:
    with pytest.raises(ArgumentError) as info:
        RayOptions(app="a", link_linger=bad)
    assert isinstance(info.value, RelayError)
    assert "link_linger must be 0.." in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"connections": 0}, "connections must be at least 1"),
        ({"min_call_actors": 3, "max_call_actors": 2}, "min_call_actors <= max_call_actors"),
        ({"on_call_actor_lost": "ignore"}, "'hangup' or 'rehome'"),
        ({"metrics_port": 70000}, "metrics_port must be 0..65535"),
        ({"join": True, "upgrade": True}, "join and upgrade exclude each other"),
    ],
)
def test_other_bad_settings_say_what_is_allowed(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ArgumentError, match=says.replace("(", r"\(").replace(")", r"\)")):
        RayOptions(app="a", **kwargs)  # type: ignore[arg-type]
