"""Weight matching finds back a permutation that keeps the function; midpoints of two checkpoints."""

from __future__ import annotations

import pytest
import torch
from traced_models import MODELS, random_model, random_perms, run

from rpgen.align import interpolate, permute, spec_from_model, weight_matching


@pytest.mark.parametrize("name", MODELS)
def test_permutation_keeps_the_function_and_weight_matching_finds_it_back(name):
    factory = MODELS[name][0]
    model, x = random_model(name)
    spec = spec_from_model(model, x)
    original = model.state_dict()
    permuted = permute(original, spec, random_perms(spec))
    assert any(not torch.equal(permuted[k], original[k]) for k in spec.axes)
    for key, tensor in permuted.items():
        assert tensor.dtype == original[key].dtype and tensor.is_contiguous()
    assert torch.allclose(run(factory, permuted, x), run(factory, original, x), atol=1e-5)

    found = weight_matching(original, permuted, spec)
    restored = permute(permuted, spec, found)
    assert all(torch.equal(restored[k], original[k]) for k in original)


def test_interpolate_blends_floats_and_keeps_counters(make_state_dict):
    a, b = make_state_dict(0), make_state_dict(1)
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid["bn.running_var"], (a["bn.running_var"] + b["bn.running_var"]) / 2)
    assert torch.equal(mid["bn.num_batches_tracked"], a["bn.num_batches_tracked"])
    assert all(torch.equal(interpolate(a, b, 1.0)[k], b[k]) for k in a if a[k].is_floating_point())
