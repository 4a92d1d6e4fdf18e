import torch
from safetensors.torch import load_file

from rpgen.zoo.wide_mlp import WideMLP, collect_wide_mlp


def test_perturbed_copies_load_into_the_model(tmp_path):
    paths = collect_wide_mlp(tmp_path / "z", params=5000, num_checkpoints=3, seed=0)
    sds = [load_file(p) for p in paths]
    model = WideMLP(5000)
    assert 4000 < sum(p.numel() for p in model.parameters()) < 6000
    for sd in sds:
        model.load_state_dict(sd)
    diff = (sds[0]["layers.0.weight"] - sds[1]["layers.0.weight"]).std() / sds[0]["layers.0.weight"].std()
    assert 0.005 < diff < 0.03  # ~1% perturbations of one initialisation
    assert model(torch.randn(2, model.norm.normalized_shape[0])).shape[0] == 2
