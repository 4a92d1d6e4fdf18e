"""Checkpoint folders: round trips and every way a folder can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rpgen.formats.checkpoints import (
    CHECKPOINT_SUFFIXES,
    list_checkpoints,
    load_checkpoints,
    load_state_dict,
    save_state_dict,
    validate_state_dicts,
)
from rpgen.errors import RpgenError


def assert_equal_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def write_folder(folder: Path, state_dicts: list[dict[str, torch.Tensor]]) -> list[Path]:
    paths = [folder / f"{i:02d}.safetensors" for i in range(len(state_dicts))]
    for sd, path in zip(state_dicts, paths):
        save_state_dict(sd, path)
    return paths


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- round trips ---------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_values_dtypes_and_metadata(tmp_path, make_state_dict):
    sd = make_state_dict(0)
    sd["half"] = torch.randn(5).half()
    path = tmp_path / "a.safetensors"
    save_state_dict(sd, path, metadata={"zoo": "test"})
    assert_equal_state_dicts(load_state_dict(path), sd)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"zoo": "test"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temp file left behind


def test_save_handles_shared_and_non_contiguous_tensors(tmp_path):
    base = torch.randn(4, 6)
    sd = {"w": base, "w_view": base[:2], "w_t": base.t(), "tied": base}
    save_state_dict(sd, tmp_path / "shared.safetensors")
    loaded = load_state_dict(tmp_path / "shared.safetensors")
    for key, value in sd.items():
        assert torch.equal(loaded[key], value)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_files_load_plain_and_wrapped(tmp_path, make_state_dict, suffix):
    sd = make_state_dict(1)
    torch.save(sd, tmp_path / f"plain{suffix}")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / f"wrapped{suffix}")
    assert_equal_state_dicts(load_state_dict(tmp_path / f"plain{suffix}"), sd)
    assert_equal_state_dicts(load_state_dict(tmp_path / f"wrapped{suffix}"), sd)


def test_list_checkpoints_sorted_and_ignores_other_files(tmp_path, make_state_dict):
    save_state_dict(make_state_dict(), tmp_path / "b.safetensors")
    torch.save(make_state_dict(), tmp_path / "a.pt")
    torch.save(make_state_dict(), tmp_path / "c.pth")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub.safetensors").mkdir()  # a directory, not a file
    assert [p.name for p in list_checkpoints(tmp_path)] == ["a.pt", "b.safetensors", "c.pth"]


def test_load_checkpoints_on_real_zoo(digits_zoo):
    paths, state_dicts = load_checkpoints(digits_zoo)
    assert [p.name for p in paths] == [f"{i:04d}.safetensors" for i in range(5)]
    assert len(state_dicts) == 5 and "bn1.num_batches_tracked" in state_dicts[0]


# --- bad folders and files -------------------------------------------------------------------------


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


def test_text_file_renamed_safetensors(tmp_path):
    path = tmp_path / "fake.safetensors"
    path.write_text("this is not a checkpoint\n" * 10)
    with pytest.raises(RpgenError, match=r"fake\.safetensors: not a readable checkpoint \(") as exc:
        load_state_dict(path)
    one_line(exc)


def test_truncated_safetensors(tmp_path, make_state_dict):
    path = tmp_path / "cut.safetensors"
    save_state_dict(make_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(RpgenError, match=r"cut\.safetensors: not a readable checkpoint") as exc:
        load_state_dict(path)
    one_line(exc)


def test_text_file_renamed_pt(tmp_path):
    path = tmp_path / "fake.pt"
    path.write_text("not a torch file")
    with pytest.raises(RpgenError, match=r"fake\.pt: not a readable checkpoint") as exc:
        load_state_dict(path)
    one_line(exc)


class Arbitrary:
    """An object that weights_only loading must refuse to unpickle."""


def test_pt_with_arbitrary_object_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(2), "obj": Arbitrary()}, path)
    with pytest.raises(RpgenError, match=r"obj\.pt: not a readable checkpoint") as exc:
        load_state_dict(path)
    one_line(exc)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [([torch.zeros(2)], "list"), ({"w": [1.0, 2.0]}, "'w' is a list"), ({}, "no tensors")],
)
def test_pt_not_a_dict_of_tensors(tmp_path, payload, reason):
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(RpgenError, match=re.escape(reason)):
        load_state_dict(path)


def test_mismatched_keys_name_file_and_key(tmp_path, make_state_dict):
    sds = [make_state_dict(0), make_state_dict(1), make_state_dict(2)]
    del sds[2]["fc.bias"]
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        load_checkpoints(tmp_path)
    message = one_line(exc)
    assert str(paths[2]) in message and "'fc.bias'" in message and "missing" in message

    sds[2]["fc.bias"] = torch.zeros(3)
    sds[2]["extra.weight"] = torch.zeros(1)
    with pytest.raises(RpgenError, match=r"02\.safetensors: unexpected key 'extra\.weight'"):
        validate_state_dicts(paths, sds)


def test_mismatched_shape_names_file_key_and_both_shapes(tmp_path, make_state_dict):
    sds = [make_state_dict(0), make_state_dict(1)]
    sds[1]["fc.weight"] = torch.zeros(3, 5)
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        load_checkpoints(tmp_path)
    message = one_line(exc)
    assert str(paths[1]) in message and "'fc.weight'" in message
    assert "[3, 5]" in message and "[3, 4]" in message


def test_mismatched_dtype_names_file_key_and_both_dtypes(tmp_path, make_state_dict):
    sds = [make_state_dict(0), make_state_dict(1)]
    sds[1]["conv.weight"] = sds[1]["conv.weight"].double()
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        load_checkpoints(tmp_path)
    message = one_line(exc)
    assert str(paths[1]) in message and "'conv.weight'" in message
    assert "float64" in message and "float32" in message


@pytest.mark.parametrize(("bad", "word"), [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_non_finite_values_name_file_and_key(tmp_path, make_state_dict, bad, word):
    sds = [make_state_dict(0), make_state_dict(1)]
    sds[0]["bn.running_var"][2] = bad  # the reference file is checked too
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        load_checkpoints(tmp_path)
    message = one_line(exc)
    assert str(paths[0]) in message and "'bn.running_var'" in message and word in message


def test_fewer_than_two_checkpoints(tmp_path, make_state_dict):
    write_folder(tmp_path, [make_state_dict(0)])
    with pytest.raises(RpgenError, match=rf"need at least 2 checkpoints in {re.escape(str(tmp_path))}, found 1"):
        load_checkpoints(tmp_path)
    with pytest.raises(RpgenError, match="found 0"):
        validate_state_dicts([], [])
