"""JSON objects read with one-line errors naming the file."""

import pytest

from rpgen.errors import RpgenError
from rpgen.formats.json_files import read_json_object


def test_objects_and_what_is_refused(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"x": [1, 2]}')
    assert read_json_object(path) == {"x": [1, 2]}
    path.write_text("[1, 2]")
    with pytest.raises(RpgenError, match="a.json: must be a map of things"):
        read_json_object(path, expected="a map of things")
    path.write_text("{nope")
    with pytest.raises(RpgenError, match=r"a.json: not valid JSON"):
        read_json_object(path)
