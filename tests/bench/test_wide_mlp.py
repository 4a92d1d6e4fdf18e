"""bench/wide_mlp.py, the scale benchmark's zoo (imported by path: bench/ is scripts, not a package)."""

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

_spec = importlib.util.spec_from_file_location("wide_mlp", Path(__file__).parents[2] / "bench" / "wide_mlp.py")
wide_mlp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wide_mlp)


def test_perturbed_copies_load_into_the_model(tmp_path):
    paths = wide_mlp.collect_wide_mlp(tmp_path / "z", params=5000, num_checkpoints=3, seed=0)
    sds = [load_file(p) for p in paths]
    model = wide_mlp.WideMLP(5000)
    assert 4000 < sum(p.numel() for p in model.parameters()) < 6000
    for sd in sds:
        model.load_state_dict(sd)
    diff = (sds[0]["layers.0.weight"] - sds[1]["layers.0.weight"]).std() / sds[0]["layers.0.weight"].std()
    assert 0.005 < diff < 0.03  # ~1% perturbations of one initialisation
    assert model(torch.randn(2, model.norm.normalized_shape[0])).shape[0] == 2


def test_seeded_without_touching_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = wide_mlp.random_init(5000, seed=7)
    assert torch.rand(4).equal(expected)  # the caller's RNG stream is unchanged
    again, other = wide_mlp.random_init(5000, seed=7), wide_mlp.random_init(5000, seed=8)
    assert all(first[k].equal(again[k]) for k in first)
    assert not first["layers.0.weight"].equal(other["layers.0.weight"])
    assert first["norm.weight"].eq(1).all() and first["norm.bias"].eq(0).all()
    with torch.random.fork_rng(devices=[]):  # the same values as torch's own init under torch.manual_seed
        torch.manual_seed(7)
        reference = wide_mlp.WideMLP(5000).state_dict()
    assert list(first) == list(reference) and all(first[k].equal(reference[k]) for k in first)
