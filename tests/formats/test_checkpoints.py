"""One checkpoint: save/load round trips and every way a file can be wrong."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import load_state_dict, save_state_dict


def assert_equal_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


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


# --- bad folders and files -------------------------------------------------------------------------


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
