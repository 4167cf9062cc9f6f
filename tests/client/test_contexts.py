"""The contexts of a receive/unreceive, shared by the in-process client, the Ray driver,
the handlers' proxy and the connection actors."""

from __future__ import annotations

import pytest

from relay_actors.config import context_list, updated_contexts
from relay_actors.errors import ArgumentError
from relay_actors.protocol import constants as c


def test_a_str_is_one_context_and_duplicates_go() -> None:
    assert context_list("sales") == ["sales"]
    assert context_list(["sales", "office", "sales"]) == ["sales", "office"]
    assert context_list([]) == []


@pytest.mark.parametrize("bad", [[""], ["ok", 3], [None]])
def test_empty_or_non_str_names_are_refused(bad: list[object]) -> None:
    with pytest.raises(ArgumentError, match="non-empty strings"):
        context_list(bad)  # type: ignore[arg-type]


def test_updated_contexts_keeps_the_order() -> None:
    assert updated_contexts(["office"], c.METHOD_RECEIVE, ["sales", "office"]) == ["office", "sales"]
    assert updated_contexts(["office", "sales"], c.METHOD_UNRECEIVE, ["office", "nope"]) == ["sales"]
