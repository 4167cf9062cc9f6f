"""Where the router puts a new CallActor: the node with the fewest of the app's, so
another app starting at the same time cannot leave this one's all on one node."""

from __future__ import annotations

from relay_actors.ray_runtime.placement import spread_node


def test_the_emptiest_node_first_and_the_first_on_a_tie() -> None:
    assert spread_node(["a", "b"], []) == "a"
    assert spread_node(["a", "b"], ["a"]) == "b"
    assert spread_node(["a", "b", "c"], ["a", "b", "a"]) == "c"
    assert spread_node(["a", "b"], ["b", "a"]) == "a"


def test_a_pool_built_one_by_one_is_spread_evenly() -> None:
    nodes = ["head", "w1", "w2"]
    placed: list[str] = []
    for _ in range(7):
        node = spread_node(nodes, placed)
        assert node is not None
        placed.append(node)
    counts = sorted(placed.count(n) for n in nodes)
    assert counts == [2, 2, 3]


def test_actors_on_nodes_that_are_gone_do_not_count_and_no_node_is_none() -> None:
    assert spread_node(["a", "b"], ["dead", "dead", "a"]) == "b"
    assert spread_node([], ["a"]) is None
    assert spread_node(["a", "a", "b"], ["a"]) == "b"  # duplicates in the node list count once
