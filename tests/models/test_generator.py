"""The generator: one prototype per token for every backbone, the position embedding."""

import pytest
import torch

from rpgen.config import Config, apply_overrides
from rpgen.models.generator import Generator, position_embedding


@pytest.mark.parametrize("backbone", ["mamba", "lstm", "transformer", "gmlp", "none"])
def test_every_backbone_gives_one_prototype_per_token_and_learns(backbone):
    torch.manual_seed(0)
    cfg = apply_overrides(Config(), [f"model.backbone={backbone}", "model.d_model=32",
                                     "model.denoiser_channels=[1, 8, 16, 8, 1]", "model.d_state=4"]).model
    positions = torch.stack([torch.arange(10) // 5, torch.arange(10) % 5], dim=1)
    gen = Generator(cfg, positions=positions, num_states=3, token_size=8)
    protos = gen.prototypes(torch.tensor([0, 2]))
    assert protos.shape == (2, 10, 32)
    assert not torch.allclose(protos[0], protos[1]), "the permutation state must change the prototypes"
    out = gen(torch.tensor([0, 2]), torch.tensor([0, 5, 19]), torch.randn(3, 8), torch.tensor([1, 500, 999]))
    assert out.shape == (3, 8)
    out.sum().backward()
    assert gen.permutation_state.weight.grad is not None
    assert all(p.grad is not None for p in gen.backbone.parameters())


def test_position_embedding_distinguishes_tensor_and_token_index():
    emb = position_embedding(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]), 16)
    assert emb.shape == (4, 16)
    assert len({tuple(row.tolist()) for row in emb}) == 4
