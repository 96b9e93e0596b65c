"""Client JSON: every failure is one exception with a cause; limits hold."""

import pytest

from app.safejson import BadJson, loads_bounded, nesting_depth


def test_parses_ordinary_json() -> None:
    assert loads_bounded('{"type": "finalize", "x": [1, {"y": "[[["}]}') == {
        "type": "finalize", "x": [1, {"y": "[[["}]}


@pytest.mark.parametrize(("data", "cause"), [
    ("[" * 1000, "nested deeper"),
    ("1" * 5000, "invalid JSON"),
    ("{", "invalid JSON"),
    (b"\xff\xfe", "UTF-8"),
    ("x" * 70_000, "over the limit"),
])
def test_every_failure_is_badjson(data: str | bytes, cause: str) -> None:
    with pytest.raises(BadJson, match=cause):
        loads_bounded(data)


def test_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth('{"a": "[[[[\\"[["}') == 1
    assert nesting_depth("[[[]]]") == 3
