"""Values from TOML or --set checked against a config field's type: conversions and one-line errors."""

from __future__ import annotations

from typing import Literal

import pytest

from rpgen.configs.coerce import coerce, describe
from rpgen.errors import RpgenError


def test_values_that_fit_are_converted_losslessly():
    assert coerce("a.b", 3, float) == 3.0 and isinstance(coerce("a.b", 3, float), float)
    assert coerce("a.b", [1, 2], tuple[int, ...]) == (1, 2)
    assert coerce("a.b", "auto", float | Literal["auto"]) == "auto"
    assert coerce("a.b", 0.5, float | Literal["auto"]) == 0.5


@pytest.mark.parametrize("value, hint, message", [
    (True, int, "must be an integer"), (1, bool, "must be true or false"), ("x", float, "must be a number"),
    ("fast", Literal["chunked", "loop"], "is not one of 'chunked', 'loop'"), (3, tuple[int, ...], "must be a list"),
    ("hot", float | Literal["auto"], "must be a number or 'auto'"),
])
def test_values_that_do_not_fit_name_the_key_and_what_it_takes(value, hint, message):
    with pytest.raises(RpgenError, match=f"config a.b = .* {message}"):
        coerce("a.b", value, hint)


def test_describe_says_what_a_field_takes():
    assert describe(int) == "an integer" and describe(Literal["auto"]) == "'auto'"
