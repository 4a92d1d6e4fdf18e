"""rpgen.safety.atomic: atomic outputs, the "only rpgen outputs are replaced" rule, stale .partial folders."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import start_python

from rpgen.errors import RpgenError
from rpgen.safety.atomic import (OWNER, atomic_dir, atomic_path, check_output_dir, make_folder, remove_stale_partials,
                                 write_text_atomic)
from rpgen.safety.overwrite import PROVENANCE

BUILD = """
import sys, time
from rpgen.safety.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "0000.safetensors").write_bytes(b"half")
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_atomic_dir_appears_complete_without_owner_file(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        assert (tmp / OWNER).is_file() and tmp.name.endswith(".partial")
        (tmp / "generation.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == [PROVENANCE, "generation.json"]


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("x")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_partial_of_a_killed_process_is_removed_on_the_next_run(tmp_path):
    proc, line = start_python(BUILD, tmp_path / "gen")
    partial = Path(line)
    try:
        assert partial.parent == tmp_path and partial.is_dir()
        with atomic_dir(tmp_path / "other") as tmp:  # its owner is alive: left alone
            (tmp / "generation.json").write_text("{}")
        assert partial.is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert partial.is_dir() and not (tmp_path / "gen").exists()  # what SIGKILL leaves behind
    with atomic_dir(tmp_path / "third") as tmp:
        (tmp / "generation.json").write_text("{}")
    assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "third"]


def test_partial_without_owner_file_is_kept(tmp_path):
    legacy = tmp_path / ".gen.abc.partial"  # an older rpgen's, or one being created: unknown owner
    legacy.mkdir()
    assert remove_stale_partials(tmp_path) == []
    assert legacy.is_dir()


def test_overwrite_replaces_only_rpgen_outputs(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(RpgenError, match="already exists"):
        check_output_dir(mine, overwrite=False)
    with pytest.raises(RpgenError, match=f"{mine} was not written by rpgen"):
        with atomic_dir(mine, overwrite=True):
            pass
    assert (mine / "notes.txt").read_text() == "keep"
    generated = tmp_path / "gen"
    with atomic_dir(generated) as tmp:
        (tmp / "generation.json").write_text("{}")
    with atomic_dir(generated, overwrite=True) as tmp:
        (tmp / "generation.json").write_text('{"again": 1}')
    assert (generated / "generation.json").read_text() == '{"again": 1}'


def test_output_under_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for block in (lambda: atomic_dir(blocker / "sub" / "out"), lambda: atomic_path(blocker / "x.json")):
        with pytest.raises(RpgenError, match=f"{blocker} is a file, not a folder"):
            with block():
                pass
    assert blocker.read_text() == "x"


def test_unwritable_folder_is_one_line(tmp_path):
    sys_dir = Path("/sys/kernel")  # refuses new entries even to root (chmod does not stop root)
    try:
        make_folder(sys_dir / "rpgen-probe")
    except RpgenError as e:
        assert "cannot create folder" in str(e) and "\n" not in str(e)
    else:  # pragma: no cover - a machine where /sys is writable
        (sys_dir / "rpgen-probe").rmdir()
        pytest.skip("/sys/kernel accepts new folders here")


def test_a_folder_another_command_wrote_meanwhile_is_kept(tmp_path):
    out = tmp_path / "gen"
    with pytest.raises(RpgenError, match=f"{out} already exists"):
        with atomic_dir(out) as tmp:
            out.mkdir()  # another command finished first
            (out / "a").write_text("first")
            (tmp / "a").write_text("second")
    assert (out / "a").read_text() == "first"
    assert not list(tmp_path.glob(".*.partial"))


def test_finished_folders_carry_their_provenance(tmp_path):
    out = tmp_path / "gen"
    with atomic_dir(out, later=("report.md",)) as tmp:
        (tmp / "0000.safetensors").write_text("x")
    record = json.loads((out / PROVENANCE).read_text())
    assert record == {"written_by": "rpgen", "entries": ["0000.safetensors"], "later": ["report.md"]}


def test_outputs_get_ordinary_permissions(tmp_path):
    import os
    import stat

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("x")
    write_text_atomic(tmp_path / "f.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~mask
