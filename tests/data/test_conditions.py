"""Condition vectors: conditions.json validation, --condition parsing, the conditional generator."""

from __future__ import annotations

import json

import pytest
import torch

from rpgen.data.conditions import (
    check_conditions,
    is_binary,
    parse_condition,
    read_conditions,
)
from rpgen.config import Config, apply_overrides
from rpgen.errors import RpgenError
from rpgen.models.generator import Generator

NAMES = ["a.safetensors", "b.safetensors"]


def write(folder, data):
    (folder / "conditions.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return folder


def test_read_conditions_in_checkpoint_order(tmp_path):
    write(tmp_path, {"b.safetensors": [1, 0.5], "a.safetensors": [0, 1]})
    assert torch.equal(read_conditions(tmp_path, NAMES), torch.tensor([[0.0, 1.0], [1.0, 0.5]]))
    empty = tmp_path / "plain"
    empty.mkdir()
    assert read_conditions(empty, NAMES) is None


@pytest.mark.parametrize("data, needles", [
    ({"a.safetensors": [0, 1]}, ["'b.safetensors'", "no condition"]),
    ({"a.safetensors": [0, 1], "b.safetensors": [1, 0], "c.safetensors": [1, 1]},
     ["'c.safetensors'", "not a checkpoint"]),
    ({"a.safetensors": [0, 1], "b.safetensors": [1, 0, 1]}, ["'b.safetensors'", "length 3", "expected 2"]),
    ({"a.safetensors": [0, "one"], "b.safetensors": [1, 0]}, ["'a.safetensors'", "'one'"]),
    ({"a.safetensors": [0, True], "b.safetensors": [1, 0]}, ["'a.safetensors'", "True"]),
    ({"a.safetensors": [], "b.safetensors": [1, 0]}, ["'a.safetensors'", "non-empty list"]),
    ({"a.safetensors": 3, "b.safetensors": [1, 0]}, ["'a.safetensors'", "non-empty list"]),
    ([[0, 1], [1, 0]], ["JSON object"]),
    ("{not json", ["not valid JSON"]),
])
def test_bad_conditions_json_is_one_clear_line(tmp_path, data, needles):
    write(tmp_path, data)
    with pytest.raises(RpgenError) as info:
        read_conditions(tmp_path, NAMES)
    message = str(info.value)
    assert "\n" not in message and "conditions.json" in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_parse_condition():
    assert parse_condition("0101") == [0.0, 1.0, 0.0, 1.0]
    assert parse_condition("0.1,0.5,2") == [0.1, 0.5, 2.0]
    assert parse_condition("1") == [1.0]
    assert parse_condition("3") == [3.0]
    for bad, needle in [("01x1", "'01x1'"), ("0.1,,2", "''"), ("nan,1", "finite")]:
        with pytest.raises(RpgenError, match="--condition") as info:
            parse_condition(bad)
        assert needle in str(info.value)


def test_check_conditions():
    check_conditions([[0, 1, 1]], dim=3, binary=True)
    check_conditions([[0.5, 1, 1]], dim=3, binary=False)
    with pytest.raises(RpgenError, match="length 2; this run's conditions have length 3"):
        check_conditions([[0, 1]], dim=3, binary=True)
    with pytest.raises(RpgenError, match="not binary"):
        check_conditions([[0.5, 1, 1]], dim=3, binary=True)
    assert is_binary(torch.tensor([[0.0, 1.0]])) and not is_binary(torch.tensor([[0.0, 0.5]]))


def tiny_model_config():
    return apply_overrides(Config(), ["model.backbone=lstm", "model.d_model=16", "model.num_layers=1",
                                      "model.denoiser_channels=[1, 8, 1]", "model.kernel_size=3"]).model


def test_conditional_generator_replaces_the_permutation_state():
    positions = torch.stack([torch.arange(6) // 3, torch.arange(6) % 3], dim=1)
    torch.manual_seed(0)
    plain = Generator(tiny_model_config(), positions=positions, num_states=4, token_size=8)
    torch.manual_seed(0)
    cond = Generator(tiny_model_config(), positions=positions, num_states=4, token_size=8, cond_dim=3)
    assert not plain.conditional and cond.conditional
    assert not any(k.startswith("condition_encoder") for k in plain.state_dict())
    assert not any(k.startswith("permutation_state") for k in cond.state_dict())
    codes = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    protos = cond.prototypes(codes)
    assert protos.shape == (2, 6, 16) and not torch.allclose(protos[0], protos[1])
    out = cond(codes, torch.tensor([0, 7]), torch.randn(2, 8), torch.tensor([3, 900]))
    out.sum().backward()
    assert all(p.grad is not None for p in cond.condition_encoder.parameters())
