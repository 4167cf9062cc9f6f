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


def test_router_options_are_frozen_and_each_field_is_documented_and_read() -> None:
    """Each RouterOptions field has a ``#:`` docstring and is read by the router's shell
    (``options.<field>``): no documented option that nothing reads, none read undocumented."""
    import ast
    import dataclasses
    import inspect
    import pathlib

    from relay_actors.ray_runtime import options, router
    from relay_actors.ray_runtime.options import RouterOptions

    opts = RouterOptions(max_active_calls=3, handlers=b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.shards = 2  # type: ignore[misc]
    assert RouterOptions(max_active_calls=1, handlers=b"", min_actors=3, max_actors=1).max_actors == 3
    fields = {f.name for f in dataclasses.fields(RouterOptions)}
    lines = inspect.getsource(RouterOptions).splitlines()
    undocumented = [
        name
        for name in fields
        if not lines[next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{name}:")) - 1]
        .strip()
        .startswith("#:")
    ]
    assert undocumented == []
    tree = ast.parse(pathlib.Path(router.__file__).read_text())
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "options"
    } | {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "options"
    }
    assert fields - read == set(), "documented but never read"
    assert (read - fields) - {"spread"} == set(), "read but not a field"
    assert options.RouterOptions.spread.__doc__


def test_no_actor_options_field_can_hold_a_secret() -> None:
    """Actor arguments show in Ray's dashboard: credentials travel through the KV store."""
    import dataclasses

    from relay_actors.ray_runtime.options import CallActorOptions, ConnectionActorOptions, RouterOptions

    for cls in (ConnectionActorOptions, CallActorOptions, RouterOptions):
        names = {f.name for f in dataclasses.fields(cls)}
        assert names and not {n for n in names if any(s in n for s in ("token", "jwt", "secret", "password"))}
