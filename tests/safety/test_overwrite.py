"""rpgen.safety.overwrite: what --overwrite may replace, and outputs that overlap inputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from rpgen.errors import RpgenError
from rpgen.safety.overwrite import check_not_overlapping, check_replaceable, is_rpgen_output


def test_rpgen_outputs_are_recognised(tmp_path, digits_zoo):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    (run / "run.json").write_text("{}")
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "generation.json").write_text("{}")
    empty = tmp_path / "empty"
    empty.mkdir()
    quick = tmp_path / "quick"
    quick.mkdir()
    (quick / "report.md").write_text("")
    (quick / ".checkpoints.x1.partial").mkdir()  # a crashed stage's leftovers do not count
    for path in (run, gen, empty, quick, digits_zoo):
        assert is_rpgen_output(path), path
        check_replaceable(path)


def test_other_folders_are_not_replaceable(tmp_path, digits_zoo):
    user = tmp_path / "user"
    user.mkdir()
    save_file({"w": torch.zeros(2)}, str(user / "a.safetensors"))  # no zoo metadata: the user's own
    half_run = tmp_path / "half"
    half_run.mkdir()
    (half_run / "config.toml").write_text("")  # config.toml alone: anyone's config folder
    quick = tmp_path / "quick"
    quick.mkdir()
    (quick / "run").mkdir()
    (quick / "run" / "thesis.tex").write_text("")  # quickstart names, foreign content
    link = tmp_path / "link"
    link.symlink_to(digits_zoo)
    for path in (user, half_run, quick, tmp_path):
        assert not is_rpgen_output(path), path
        with pytest.raises(RpgenError, match="not written by rpgen"):
            check_replaceable(path)
    with pytest.raises(RpgenError, match="symbolic link"):
        check_replaceable(link)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(RpgenError, match="not a directory"):
        check_replaceable(file)


@pytest.mark.parametrize("out, relation", [
    ("zoo", "is the"), ("zoo/run", "is inside the"), (".", "contains the"), ("zoo/../zoo", "is the"),
    ("link", "is the"), ("link/run", "is inside the"),
])
def test_overlapping_outputs_are_refused(tmp_path, monkeypatch, out, relation):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "zoo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RpgenError, match=f"--out {out} {relation} checkpoint folder zoo"):
        check_not_overlapping(out, {"checkpoint folder": "zoo"})


def test_separate_outputs_pass(tmp_path):
    check_not_overlapping(tmp_path / "run", {"checkpoint folder": tmp_path / "zoo"})
    check_not_overlapping(tmp_path / "zoo2", {"checkpoint folder": tmp_path / "zoo"})  # a prefix is not a parent
