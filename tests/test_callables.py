"""A ``path/file.py:name`` or ``module:name`` spec resolved to what it names, one-line errors otherwise."""

import pytest

from rpgen.callables import resolve_callable
from rpgen.errors import RpgenError


def test_specs_resolve_files_and_modules(tmp_path):
    (tmp_path / "mine.py").write_text("def f(x):\n    return x + 1\nvalue = 3\n")
    assert resolve_callable(f"{tmp_path / 'mine.py'}:f", what="evaluator")(1) == 2
    assert resolve_callable("rpgen.zoo.digits:evaluate", what="evaluator").__name__ == "evaluate"
    for spec, needle in ((f"{tmp_path / 'mine.py'}:value", "is a int, not a function"),
                         (f"{tmp_path / 'nope.py'}:f", "not found"), ("no_such_module:f", "not importable"),
                         ("justaname", "must look like")):
        with pytest.raises(RpgenError, match="thing") as exc:
            resolve_callable(spec, what="thing")
        assert needle in str(exc.value) and "\n" not in str(exc.value)
