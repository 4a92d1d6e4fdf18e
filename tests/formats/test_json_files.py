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


def test_links_pipes_folders_and_deep_nesting_are_refused_without_reading(tmp_path):
    import os

    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(RpgenError, match="link.json: is a symbolic link"):
        read_json_object(tmp_path / "link.json")
    os.mkfifo(tmp_path / "pipe.json")  # opening it would wait for a writer forever
    with pytest.raises(RpgenError, match="pipe.json: not a regular file"):
        read_json_object(tmp_path / "pipe.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(RpgenError, match="dir.json: not a regular file"):
        read_json_object(tmp_path / "dir.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RpgenError, match="deep.json: not valid JSON"):
        read_json_object(tmp_path / "deep.json")
    with pytest.raises(RpgenError, match="missing.json: cannot read"):
        read_json_object(tmp_path / "missing.json")
