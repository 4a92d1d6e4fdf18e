"""Permutation groups traced with torch.fx: digits CNN, residual sums, flatten blocks, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from traced_models import Attention, ConvFlattenMLP, ResidualMLP, TorchAttention

from rpgen.align import spec_from_model
from rpgen.errors import RpgenError
from rpgen.zoo.digits import DigitsCNN


def test_digits_spec_groups_and_fixed_output():
    spec = spec_from_model(DigitsCNN())
    assert spec.groups == {"P1": 8, "P2": 16, "P3": 32}
    assert [(a.axis, a.group) for a in spec.axes["conv2.weight"]] == [(1, "P1"), (0, "P2")]
    assert [a.group for a in spec.axes["bn3.running_var"]] == ["P3"]
    assert [(a.axis, a.group) for a in spec.axes["fc.weight"]] == [(1, "P3")]  # its outputs are the model's
    assert "fc.bias" not in spec.axes and "bn1.num_batches_tracked" not in spec.axes
    assert spec_from_model(DigitsCNN(), torch.zeros(2, 1, 8, 8)) == spec


def test_residual_sum_shares_one_group_and_flatten_has_a_block():
    spec = spec_from_model(ResidualMLP())
    stream = spec.axes["inp.weight"][0].group
    assert {a.group for a in spec.axes["fc.1.weight"]} == {stream} and spec.groups[stream] == 8
    assert [a.group for a in spec.axes["norm.weight"]] == [stream]
    assert len(spec.groups) == 2  # the residual stream and the head's hidden layer
    flat = spec_from_model(ConvFlattenMLP(), torch.zeros(1, 1, 6, 6))
    assert [(a.axis, a.block) for a in flat.axes["fc1.weight"]] == [(1, 16), (0, 1)]
    assert spec_from_model(ConvFlattenMLP()) == flat  # the block also follows from fc1's input size


@pytest.mark.parametrize(
    ("model", "example", "node"),
    [(Attention(), None, "node 'transpose' (call_method transpose)"),
     (TorchAttention(), None, "node 'attn' (call_module attn: MultiheadAttention)")],
)
def test_models_mixing_hidden_units_are_refused_naming_the_node(model, example, node):
    with pytest.raises(RpgenError, match="cannot derive permutation groups") as exc:
        spec_from_model(model, example)
    message = str(exc.value)
    assert node in message and "write a spec file" in message and "\n" not in message


def test_matmul_between_activations_is_refused():
    class Gram(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(self.a(x), self.b(x))  # (B, 6, 6) @ (B, 6, 6), both hidden

    with pytest.raises(RpgenError, match=r"node 'matmul' \(call_function torch.matmul\) mixes hidden units"):
        spec_from_model(Gram())
