"""Listing a checkpoint folder: which entries count, in which order, and the folders refused."""

from __future__ import annotations

import pytest
import torch

from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import save_state_dict
from rpgen.formats.listing import CHECKPOINT_SUFFIXES, list_checkpoints, natural_key


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_list_checkpoints_sorted_and_ignores_other_files(tmp_path, make_state_dict):
    save_state_dict(make_state_dict(), tmp_path / "b.safetensors")
    torch.save(make_state_dict(), tmp_path / "a.pt")
    torch.save(make_state_dict(), tmp_path / "c.pth")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub.safetensors").mkdir()  # a directory, not a file
    assert [p.name for p in list_checkpoints(tmp_path)] == ["a.pt", "b.safetensors", "c.pth"]


def test_natural_order_compares_numbers_by_value():
    names = ["checkpoint-1000", "checkpoint-500", "h.10", "h.2"]
    assert sorted(names, key=natural_key) == ["checkpoint-500", "checkpoint-1000", "h.2", "h.10"]


def test_missing_folder(tmp_path):
    with pytest.raises(RpgenError, match="does not exist") as exc:
        list_checkpoints(tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(exc)


def test_folder_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RpgenError, match="not a directory"):
        list_checkpoints(tmp_path / "f")


def test_empty_folder_names_folder_and_suffixes(tmp_path):
    (tmp_path / "readme.md").write_text("no checkpoints here")
    with pytest.raises(RpgenError) as exc:
        list_checkpoints(tmp_path)
    message = one_line(exc)
    assert str(tmp_path) in message
    assert all(suffix in message for suffix in CHECKPOINT_SUFFIXES)
