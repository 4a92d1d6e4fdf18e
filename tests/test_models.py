import pytest
import torch

from rpgen.config import Config, apply_overrides
from rpgen.models.backbones import Mamba, selective_scan
from rpgen.models.denoiser import ConvDenoiser
from rpgen.models.generator import Generator, position_embedding

# The parameter names of mamba_ssm.Mamba (v2.x, mamba_simple.py), which the CUDA path uses.
MAMBA_SSM_NAMES = {"A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                   "dt_proj.weight", "dt_proj.bias", "out_proj.weight"}


def test_selective_scan_matches_the_recurrence():
    g = torch.Generator().manual_seed(0)
    b, l, e, n = 2, 37, 5, 3
    dt = torch.rand(b, l, e, generator=g) * 0.3
    A = -torch.rand(e, n, generator=g) * 4
    B, C = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g)
    x = torch.randn(b, l, e, generator=g)
    h = torch.zeros(b, e, n)
    ys = []
    for t in range(l):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    torch.testing.assert_close(selective_scan(dt, A, B, C, x), torch.stack(ys, 1), rtol=1e-5, atol=1e-5)


def test_mamba_has_mamba_ssm_parameter_names_and_shapes():
    m = Mamba(32, d_state=16, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert set(shapes) == MAMBA_SSM_NAMES
    assert shapes["in_proj.weight"] == (128, 32) and shapes["A_log"] == (64, 16)
    assert shapes["x_proj.weight"] == (2 + 32, 64) and shapes["conv1d.weight"] == (64, 1, 4)


def test_mamba_is_causal():
    torch.manual_seed(0)
    m = Mamba(16, d_state=4)
    x = torch.randn(1, 12, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    torch.testing.assert_close(m(x2)[:, :8], y[:, :8])
    assert not torch.allclose(m(x2)[:, 8:], y[:, 8:])


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


def test_denoiser_uses_condition_time_and_input():
    torch.manual_seed(0)
    d = ConvDenoiser(token_size=16, cond_dim=8, channels=(1, 8, 16, 8, 1), kernel_size=3)
    for p in d.parameters():  # move the zero-initialised time projection off zero
        torch.nn.init.normal_(p, std=0.3)
    x, t, c = torch.randn(4, 16), torch.tensor([0, 10, 500, 999]), torch.randn(4, 8)
    y = d(x, t, c)
    assert y.shape == (4, 16)
    assert not torch.allclose(d(x, t, c + 1), y)
    assert not torch.allclose(d(x, t.flip(0), c), y)
    assert not torch.allclose(d(x + 1, t, c), y)
    # Per-token normalisation: a token's output does not depend on the rest of the batch.
    torch.testing.assert_close(d(x[:1], t[:1], c[:1]), y[:1], rtol=1e-4, atol=1e-5)


def test_position_embedding_distinguishes_tensor_and_token_index():
    emb = position_embedding(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]), 16)
    assert emb.shape == (4, 16)
    assert len({tuple(row.tolist()) for row in emb}) == 4
