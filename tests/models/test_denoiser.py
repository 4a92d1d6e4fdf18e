"""The conv denoiser: uses its condition, timestep and input; per-token normalisation."""

import torch

from rpgen.models.denoiser import ConvDenoiser


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
