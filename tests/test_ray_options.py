"""RayOptions refuses bad settings at construction, saying what is allowed; the actors' typed
options are built from the driver's settings, layout and client options, without secrets."""

from __future__ import annotations

import pytest

from relay_actors.config import Settings, resolve_settings
from relay_actors.errors import ArgumentError, RelayError
from relay_actors.protocol import constants as c
from relay_actors.ray_runtime import RayOptions
from relay_actors.ray_runtime.actor_link import DEFAULT_LINGER, MAX_LINGER
from relay_actors.ray_runtime.options import (
    CallActorOptions,
    ConnectionActorOptions,
    RouterOptions,
    call_actor_app_part,
)


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


SECRET = "s3cr3t-t0ken-value"


def _settings(host: str, scheme: str = "wss", allow_insecure: bool | None = None) -> Settings:
    return resolve_settings(
        "proj", SECRET, None, host, ["office"], 40, scheme=scheme, env={}, allow_insecure=allow_insecure
    )


def test_a_shard_gets_the_drivers_settings_and_client_options_and_no_credentials() -> None:
    settings = _settings("relay.example.com")
    options = RayOptions(app="a", on_call_actor_lost="rehome", link_linger=0.002)
    client = {"over_limit": "pass", "request_timeout": 7.0, "backoff": {"initial": 0.1}}
    shard = ConnectionActorOptions.for_app(settings, options, client, ca_pem="PEM")
    assert (shard.host, shard.scheme, shard.contexts, shard.ca_pem) == (
        "relay.example.com",
        "wss",
        ("office",),
        "PEM",
    )
    assert (shard.over_limit, shard.request_timeout, shard.backoff) == ("pass", 7.0, {"initial": 0.1})
    assert (shard.on_call_actor_lost, shard.link_linger, shard.allow_insecure) == ("rehome", 0.002, False)
    assert SECRET not in repr(shard)
    defaults = ConnectionActorOptions.for_app(settings, options, {})
    assert (defaults.over_limit, defaults.request_timeout) == ("drop", c.REQUEST_TIMEOUT)


def test_plaintext_the_driver_allowed_towards_a_remote_host_is_allowed_in_the_shard_too() -> None:
    remote = _settings("10.0.0.5:8080", scheme="ws", allow_insecure=True)
    loopback = _settings("127.0.0.1:8080", scheme="ws")
    options = RayOptions(app="a")
    assert ConnectionActorOptions.for_app(remote, options, {}).allow_insecure
    # Loopback needs no opt-in: the actor's own check lets it through.
    assert not ConnectionActorOptions.for_app(loopback, options, {}).allow_insecure


def test_the_router_and_call_actors_get_the_apps_layout_and_the_handlers_without_secrets() -> None:
    settings = _settings("relay.example.com")
    options = RayOptions(app="a", connections=2, min_call_actors=2, max_call_actors=4, calls_per_actor=50)
    client = {"handler_timeout": 9.0, "dial_timeout": 20.0}
    part = call_actor_app_part(settings, options, client, log_level=10, log_job="job-1")
    assert part["project"] == "proj" and SECRET not in repr(part)
    assert (part["log_level"], part["log_job"], part["on_handler_error"]) == (10, "job-1", "hangup")
    call_actor = CallActorOptions.from_parts(part, capacity=50, shards=2)  # every key is a field
    assert (call_actor.handler_timeout, call_actor.dial_timeout) == (9.0, 20.0)
    router = RouterOptions.for_app(settings, options, b"handlers", part)
    assert (router.max_active_calls, router.shards, router.min_actors, router.max_actors) == (40, 2, 2, 4)
    assert (router.capacity, router.handlers, router.call_actor) == (50, b"handlers", part)
    assert router.metrics == options.metrics_config() and SECRET not in repr(router)
