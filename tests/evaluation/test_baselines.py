"""Baselines made without a generator: noise, average, midpoints, and the least-squares map of a
conditional zoo."""

from __future__ import annotations

import pytest
import torch

from rpgen.evaluation.baselines import NOISE_SCALES, LinearMap, average, baseline_label, baselines
from rpgen.zoo import digits_tasks as zoo


def test_baselines_shapes_names_and_seed():
    checkpoints = torch.randn(7, 30, generator=torch.Generator().manual_seed(0))
    out = baselines(checkpoints, seed=3)
    noise_names = [f"noise_{s:g}" for s in NOISE_SCALES]
    assert list(out) == [*noise_names, "average", "interpolation", "gaussian"] and len(NOISE_SCALES) >= 4
    for name, vectors in out.items():
        assert vectors.shape[1] == 30, name
    assert out["average"].shape == (1, 30)
    torch.testing.assert_close(out["average"][0], checkpoints.mean(0))
    assert out["noise_0.001"].shape == (7, 30) and out["interpolation"].shape == (7, 30)
    # noise grows with the scale and is relative to the (normalised) std of 1
    spread = [float((out[f"noise_{s:g}"] - checkpoints).std()) for s in NOISE_SCALES]
    assert spread == sorted(spread) and spread[-1] == pytest.approx(NOISE_SCALES[-1], rel=0.2)
    # every midpoint lies halfway between two distinct checkpoints
    for mid in out["interpolation"]:
        d = torch.cdist(mid[None], checkpoints)[0]
        two = d.topk(2, largest=False).values
        assert two[0] == pytest.approx(float(two[1]), rel=1e-4) and two[0] > 0
    again = baselines(checkpoints, seed=3)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert not torch.equal(baselines(checkpoints, seed=4)["noise_1"], out["noise_1"])
    assert baselines(checkpoints, max_models=3)["noise_1"].shape == (3, 30)
    matched = baselines(checkpoints, matched_distance=2.0)
    assert list(matched) == [*noise_names, "noise_matched", "average", "interpolation", "gaussian"]
    distance = (matched["noise_matched"] - checkpoints).norm(dim=1)
    assert float(distance.mean()) == pytest.approx(2.0, rel=0.2)


def test_the_field_baselines_follow_the_checkpoints_mean_and_spread():
    rng = torch.Generator().manual_seed(0)
    checkpoints = torch.randn(40, 500, generator=rng) * torch.linspace(0.1, 2, 500) + 3
    out = baselines(checkpoints, seed=1)
    assert list(out)[-2:] == ["averaged_16", "gaussian"]
    assert out["averaged_16"].shape == (10, 500) and out["gaussian"].shape == (10, 500)
    subset_means = [float(torch.cdist(m[None], checkpoints).min()) for m in out["averaged_16"]]
    assert min(subset_means) > 0 and len({round(d, 4) for d in subset_means}) == 10  # ten distinct subsets
    # each subset mean is nearer the full mean than a checkpoint is: it averages 16 of them
    spread = (out["averaged_16"] - checkpoints.mean(0)).norm(dim=1).max()
    assert spread < (checkpoints - checkpoints.mean(0)).norm(dim=1).min()
    ratio = out["gaussian"].std(dim=0) / checkpoints.std(dim=0)
    assert 0.4 < float(ratio.median()) < 1.6  # per-coordinate spread, from ten draws
    z = (out["gaussian"].mean(0) - checkpoints.mean(0)) / (checkpoints.std(0) / 10 ** 0.5)
    assert float(z.abs().max()) < 5  # centred on each coordinate's mean
    assert "averaged_16" not in baselines(checkpoints[:16])  # 16 or fewer: it is the average


def test_labels_name_every_baseline():
    assert baseline_label("noise_0.1") == "checkpoint + noise 0.1 std"
    assert baseline_label("noise_matched") == "checkpoint + noise at the generated models' distance"
    assert baseline_label("interpolation") == "midpoint of two checkpoints" and baseline_label("other") == "other"
    assert baseline_label("averaged_16") == "average of 16 random checkpoints"
    assert baseline_label("gaussian") == "Gaussian fitted to each coordinate of the checkpoints"


def test_average_of_state_dicts_is_the_midpoint_of_two(make_state_dict):
    a, b = make_state_dict(0), make_state_dict(1)
    mid = average([a, b])
    assert list(mid) == list(a) and torch.equal(mid["fc.weight"], (a["fc.weight"] + b["fc.weight"]) / 2)


def test_a_linear_map_reproduces_a_linear_zoo_and_keeps_the_keys():
    """A zoo whose weights are linear in the condition is fitted exactly, on conditions it never saw."""
    codes = zoo.all_codes()
    w = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))

    def weights(code: str) -> dict[str, torch.Tensor]:
        bits = torch.tensor(zoo.code_bits(code))
        return {"b": bits @ w[:, :2] + 1.0, "a": (bits @ w[:, 2:]).reshape(2, 2)}

    linear = LinearMap((zoo.code_bits(c), weights(c)) for c in codes[::3])  # every bit varies
    model = linear.model(zoo.code_bits(codes[502]))  # 502 % 3: not fitted on
    assert list(model) == ["b", "a"] and model["a"].shape == (2, 2) and model["a"].dtype == torch.float32
    want = weights(codes[502])
    assert all(torch.allclose(model[k], want[k], atol=1e-4) for k in want)


def test_a_polynomial_map_reproduces_products_of_bits():
    """Degree d fits the bits, their products of up to d bits, and 1: a product of two bits is fitted
    exactly by degree 2 (on a code it was not fitted on), and not by degree 1."""
    codes = zoo.all_codes()
    held = codes[100]
    examples = [(b, {"w": torch.tensor([b[0] * b[1], 2 * b[2] - 1.0])})
                for c in codes if c != held for b in [zoo.code_bits(c)]]
    bits = zoo.code_bits(held)
    want = torch.tensor([bits[0] * bits[1], 2 * bits[2] - 1.0])
    assert len(LinearMap(examples[:20], degree=3).features(bits)) == 10 + 45 + 120 + 1
    assert torch.allclose(LinearMap(examples, degree=2).model(bits)["w"], want, atol=1e-5)
    assert not torch.allclose(LinearMap(examples, degree=1).model(bits)["w"], want, atol=1e-2)
