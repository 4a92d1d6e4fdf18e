"""One-line errors: the first line of another exception, typed or not, cut to a length."""

from rpgen.errors import RpgenError, first_line


def test_first_line_of_an_exception():
    exc = ValueError("no weights here\nsecond line")
    assert first_line(exc) == "ValueError: no weights here"
    assert first_line(exc, typed=False) == "no weights here"
    assert first_line(KeyError()) == "KeyError" and first_line(KeyError(), typed=False) == "KeyError"
    long = first_line(RuntimeError("x" * 300), typed=False, limit=160)
    assert len(long) == 160 and long.endswith("...")
    assert issubclass(RpgenError, Exception)
