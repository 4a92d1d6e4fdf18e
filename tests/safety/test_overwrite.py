"""rpgen.safety.overwrite: what --overwrite may replace, and outputs that overlap inputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from rpgen.errors import RpgenError
from rpgen.safety.overwrite import PROVENANCE, check_not_overlapping, check_replaceable, is_rpgen_output, mark


def test_rpgen_outputs_are_recognised(tmp_path, digits_zoo):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    mark(run, later=("metrics.jsonl", "state"))
    (run / "metrics.jsonl").write_text("")  # added later, as its provenance allows
    (run / "state").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    quick = tmp_path / "quick"
    quick.mkdir()
    mark(quick, later=("run", "report.md"))
    (quick / "report.md").write_text("")
    (quick / ".checkpoints.x1.partial").mkdir()  # a crashed stage's leftovers do not count
    for path in (run, empty, quick, digits_zoo):  # the zoo: written by rpgen collect
        assert is_rpgen_output(path), path
        check_replaceable(path)


def test_other_folders_are_not_replaceable(tmp_path, digits_zoo):
    user = tmp_path / "user"
    user.mkdir()
    save_file({"w": torch.zeros(2)}, str(user / "a.safetensors"))
    project = tmp_path / "project"  # rpgen's file names, no provenance: anyone's folder
    (project / "src").mkdir(parents=True)
    for name in ("config.toml", "run.json", "generation.json", "src/main.py"):
        (project / name).write_text("{}")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("mine")
    temps = tmp_path / "temps"  # only temporary-looking names: still not empty
    temps.mkdir()
    (temps / ".draft.tmp").write_text("mine")
    beside = tmp_path / "beside"  # an rpgen output with a user's file added
    beside.mkdir()
    (beside / "generation.json").write_text("{}")
    mark(beside, later=("report.md",))
    (beside / "precious.txt").write_text("mine")
    quick = tmp_path / "quick"  # an rpgen output holding another with foreign content
    (quick / "run").mkdir(parents=True)
    mark(quick / "run")
    mark(quick)
    (quick / "run" / "thesis.tex").write_text("")
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "data.csv").write_text("1")
    (forged / PROVENANCE).write_text('{"written_by": "rpgen", "entries": "data.csv", "later": []}')
    link = tmp_path / "link"
    link.symlink_to(digits_zoo)
    for path in (user, project, notes, temps, beside, quick, forged, tmp_path):
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
