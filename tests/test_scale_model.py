"""The scale model (``relay_actors.scale_model``): known inputs give known layouts, more load
never needs less, and the bottleneck is the part with the lowest ceiling."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from relay_actors.scale_model import Costs, main, node_capacity, plan, predict_usage, table

#: Round numbers that make the arithmetic checkable by hand.
ROUND = Costs(
    frames_per_call=20,
    connection_us_per_call=1000,
    router_us_per_call=100,
    call_actor_us_per_call=500,
    ray_us_per_call=400,
    idle_ms_per_s_per_actor=10,
    idle_ms_per_s_per_node=50,
    head_idle_ms_per_s=0,
    actor_pss_mib=100,
    node_pss_mib=200,
    head_pss_mib=100,
    call_actor_kib_per_call=8,
    connection_kib_per_call=2,
    ws_frames_per_s=100_000,
    utilisation=0.5,
    calls_per_actor=1000,
    min_call_actors=2,
)


def test_known_inputs_give_known_outputs() -> None:
    # Ceilings at 50% of a core: shard 500/s (its WebSocket: 5,000/s), router 5,000/s, CallActor 1,000/s.
    assert ROUND.ceilings() == {
        "websocket": 5000.0,
        "connection actor": 500.0,
        "router": 5000.0,
        "CallActor": 1000.0,
    }
    p = plan(concurrent=3000, rate=1200, cores_per_node=4, costs=ROUND)
    assert p.shards == 3  # 1200 / 500
    assert p.call_actors == 3  # 3000 held / 1000 each; 2 for CPU
    # 1200/s * 2 ms + (3 + 3 + 1 processes * 10 ms/s + nodes * 50 ms/s): 2.4 + 0.07 + 0.05 * nodes
    assert p.nodes == 2  # 2.57 busy / 0.5 → 6 cores → 2 four-core nodes (2.62 → still 6)
    assert p.busy_cores == pytest.approx(2.4 + 0.07 + 0.1)
    assert p.cores == 6
    # 7 processes * 100 + 2 nodes * 200 + head 100 MiB + 3000 * 10 KiB
    assert p.memory_gib == pytest.approx((700 + 400 + 100 + 3000 * 10 / 1024) / 1024)
    assert p.first_bottleneck == "connection actor"
    assert p.router_load == pytest.approx(0.12)
    assert p.fits_one_app


def test_predict_usage_is_what_plan_sums() -> None:
    busy, mib = predict_usage(rate=100, held=1024, shards=1, call_actors=2, nodes=1, costs=ROUND)
    assert busy == pytest.approx(100 * 0.002 + 4 * 0.010 + 0.050)
    assert mib == pytest.approx(4 * 100 + 200 + 100 + 1024 * 10 / 1024)


def test_more_load_never_needs_less() -> None:
    sizes = [0, 1_000, 10_000, 100_000, 1_000_000]
    rates = [0.0, 10.0, 1_000.0, 10_000.0, 100_000.0]
    for costs in (ROUND, Costs()):
        plans = {(n, m): plan(n, m, 16, costs) for n, m in itertools.product(sizes, rates)}
        for (n, m), p in plans.items():
            for n2, m2 in ((n2, m2) for n2, m2 in plans if n2 >= n and m2 >= m):
                q = plans[(n2, m2)]
                assert q.shards >= p.shards and q.call_actors >= p.call_actors
                assert q.cores >= p.cores and q.nodes >= p.nodes
                assert q.busy_cores >= p.busy_cores and q.memory_gib >= p.memory_gib


def test_the_first_bottleneck_is_the_lowest_ceiling() -> None:
    # A cheap loop but a chatty flow: the WebSocket saturates first.
    chatty = Costs(frames_per_call=200, connection_us_per_call=100, call_actor_us_per_call=100)
    assert plan(0, 1000, costs=chatty).first_bottleneck == "websocket"
    assert plan(0, 1000, costs=chatty).shards == 2  # 500 calls/s per WebSocket
    heavy_handlers = Costs(call_actor_us_per_call=5000)
    assert plan(0, 1000, costs=heavy_handlers).first_bottleneck == "CallActor"
    heavy_router = Costs(router_us_per_call=5000)
    p = plan(0, 1000, costs=heavy_router)
    assert p.first_bottleneck == "router" and not p.fits_one_app
    assert any("split the traffic over 8 apps" in note for note in p.notes)


def test_node_capacity_is_the_last_rate_that_fits_one_node() -> None:
    rate = node_capacity(3000, 4, ROUND)
    assert plan(3000, rate, 4, ROUND).nodes == 1
    assert plan(3000, rate * 1.02, 4, ROUND).nodes == 2
    # Four cores at 50%: 2 busy cores, less the idle costs, at 2 ms per call: ~ 960 calls/s.
    assert 900 < rate < 1000
    assert node_capacity(3000, 8, ROUND) > rate


def test_bad_input_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="concurrent and rate"):
        plan(-1, 10)
    with pytest.raises(ValueError, match="cores_per_node"):
        plan(10, 10, cores_per_node=0)
    with pytest.raises(ValueError, match="utilisation"):
        Costs(utilisation=1.5)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--concurrent", "10000", "--rate", "1000", "--cores-per-node", "16", "--table"]) == 0
    out = capsys.readouterr().out
    assert "connection shards" in out and "first bottleneck" in out
    assert "| 100,000 | 10,000 |" in out


def test_the_docs_table_is_the_models() -> None:
    """The table on the docs' Scale model page is what the model says (regenerate it with
    ``python -m relay_actors.scale_model --concurrent 10000 --rate 1000 --table``)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "concepts" / "scale-model.md").read_text()
    expected = table([plan(n, m, 16) for n in (10_000, 100_000) for m in (1_000, 10_000)])
    assert expected in page
