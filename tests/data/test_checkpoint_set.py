"""The zoo folder opened once: paths, lazy checkpoints checked from their headers, the layout, and
every way a set of checkpoints can disagree (one line naming the file and the key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import save_state_dict


def write_folder(folder: Path, state_dicts: list[dict[str, torch.Tensor]]) -> list[Path]:
    paths = [folder / f"{i:02d}.safetensors" for i in range(len(state_dicts))]
    for sd, path in zip(state_dicts, paths):
        save_state_dict(sd, path)
    return paths


def read_all(folder: Path) -> CheckpointSet:
    """What training does: open the set, then read every tensor once for the statistics."""
    checkpoints = CheckpointSet.open(folder)
    checkpoints.layout(16)
    return checkpoints


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_real_zoo_opens_lazily_with_its_layout(digits_zoo):
    checkpoints = CheckpointSet.open(digits_zoo)
    assert checkpoints.names == [f"{i:04d}.safetensors" for i in range(5)] and len(checkpoints) == 5
    assert "bn1.num_batches_tracked" in checkpoints.checkpoints[0]
    layout = checkpoints.layout(16)
    assert checkpoints.layout(16) is layout and layout.num_params == 6386  # parameters and float BatchNorm buffers
    assert checkpoints.conditions is None and checkpoints.lineage(layout).num_runs == 1


def test_mismatched_keys_name_file_and_key(tmp_path, make_state_dict):
    sds = [make_state_dict(0), make_state_dict(1), make_state_dict(2)]
    del sds[2]["fc.bias"]
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        read_all(tmp_path)
    message = one_line(exc)
    assert str(paths[2]) in message and "'fc.bias'" in message and "missing" in message

    sds[2]["fc.bias"] = torch.zeros(3)
    sds[2]["extra.weight"] = torch.zeros(1)
    write_folder(tmp_path, sds)
    with pytest.raises(RpgenError, match=r"02\.safetensors: unexpected key 'extra\.weight'"):
        read_all(tmp_path)


@pytest.mark.parametrize(("key", "change", "needles"), [
    ("fc.weight", lambda v: torch.zeros(3, 5), ["[3, 5]", "[3, 4]"]),  # the shape, and the first one's
    ("conv.weight", lambda v: v.double(), ["float64", "float32"]),  # the dtype, and the first one's
])
def test_a_mismatched_shape_or_dtype_names_file_key_and_both(tmp_path, make_state_dict, key, change, needles):
    sds = [make_state_dict(0), make_state_dict(1)]
    sds[1][key] = change(sds[1][key])
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        read_all(tmp_path)
    message = one_line(exc)
    assert str(paths[1]) in message and f"'{key}'" in message and all(n in message for n in needles)


@pytest.mark.parametrize(("bad", "word"), [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_non_finite_values_name_file_and_key(tmp_path, make_state_dict, bad, word):
    sds = [make_state_dict(0), make_state_dict(1)]
    sds[0]["bn.running_var"][2] = bad  # the reference file is checked too
    paths = write_folder(tmp_path, sds)
    with pytest.raises(RpgenError) as exc:
        read_all(tmp_path)
    message = one_line(exc)
    assert str(paths[0]) in message and "'bn.running_var'" in message and word in message


def test_fewer_than_two_checkpoints(tmp_path, make_state_dict):
    write_folder(tmp_path, [make_state_dict(0)])
    with pytest.raises(RpgenError, match=rf"need at least 2 checkpoints in {re.escape(str(tmp_path))}, found 1"):
        read_all(tmp_path)
