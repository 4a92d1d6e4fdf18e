"""Mamba-1: the mixer (names, causality) and the chunked selective scan against the reference
recurrence (outputs, gradients, memory, stability)."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_causal, saved_bytes
from rpgen.models.mamba import Mamba, selective_scan, selective_scan_reference

# The parameter names of mamba_ssm.Mamba (v2.x, mamba_simple.py), which the CUDA path uses.
MAMBA_SSM_NAMES = {"A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                   "dt_proj.weight", "dt_proj.bias", "out_proj.weight"}


def scan_inputs(b: int, l: int, e: int, n: int, *, dtype=torch.float64, dt_max: float = 0.3, a_max: float = 4.0,
                seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dt = torch.rand(b, l, e, generator=g, dtype=dtype) * dt_max
    A = -torch.rand(e, n, generator=g, dtype=dtype) * a_max
    B, C = torch.randn(b, l, n, generator=g, dtype=dtype), torch.randn(b, l, n, generator=g, dtype=dtype)
    x = torch.randn(b, l, e, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (dt, A, B, C, x)]


def forward_and_grads(fn, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    y = fn(*inputs)
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)  # a loss that weighs every output
    return (y.detach(), *torch.autograd.grad((y * weight).sum(), inputs))


@pytest.mark.parametrize("l, chunk", [(1, 32), (7, 3), (37, 8), (37, 37), (64, 16), (64, 100), (100, 1), (129, 32)])
def test_chunked_scan_matches_reference_forward_and_gradients_float64(l, chunk):
    inputs = scan_inputs(2, l, 5, 3)
    expected = forward_and_grads(selective_scan_reference, inputs)
    got = forward_and_grads(lambda *t: selective_scan(*t, chunk=chunk)[0], inputs)
    for name, e, g in zip(["y", "dt", "A", "B", "C", "x"], expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("chunk", [16, 24])
def test_chunked_scan_matches_reference_float32(chunk):
    inputs = scan_inputs(3, 200, 16, 8, dtype=torch.float32, seed=1)
    expected = forward_and_grads(selective_scan_reference, inputs)
    got = forward_and_grads(lambda *t: selective_scan(*t, chunk=chunk)[0], inputs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_chunked_scan_is_stable_with_strong_decay():
    # dt A down to -2,000 per token and -64,000 per chunk: a closed form exp(-cumsum) would overflow.
    inputs = scan_inputs(1, 96, 4, 8, dtype=torch.float32, dt_max=20.0, a_max=100.0, seed=2)
    expected = forward_and_grads(selective_scan_reference, inputs)
    got = forward_and_grads(lambda *t: selective_scan(*t, chunk=32)[0], inputs)
    for e, g in zip(expected, got):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split, chunk", [(20, 8), (1, 32), (37, 5)])
def test_chunked_scan_continues_from_a_state_forward_and_gradients(split, chunk):
    inputs = scan_inputs(2, 45, 5, 3, seed=3)

    def in_two(dt, A, B, C, x):
        first, h = selective_scan(dt[:, :split], A, B[:, :split], C[:, :split], x[:, :split], chunk=chunk)
        second, _ = selective_scan(dt[:, split:], A, B[:, split:], C[:, split:], x[:, split:], chunk=chunk, h0=h)
        return torch.cat([first, second], dim=1)

    expected = forward_and_grads(selective_scan_reference, inputs)
    for name, e, g in zip(["y", "dt", "A", "B", "C", "x"], expected, forward_and_grads(in_two, inputs)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")


def test_chunked_scan_state_gradients_match_autograd_of_the_recurrence():
    dt, A, B, C, x = scan_inputs(2, 9, 4, 3, seed=4)
    h0 = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)

    def by_hand(dt, A, B, C, x, h0):  # the recurrence, continued from h0, differentiated by autograd
        h, ys = h0, []
        for t in range(dt.shape[1]):
            h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
            ys.append((h * C[:, t, None, :]).sum(-1))
        return torch.stack(ys, 1), h

    results = []
    for fn in (by_hand, lambda *t: selective_scan(*t[:5], chunk=4, h0=t[5])):
        y, h = fn(dt, A, B, C, x, h0)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum() + (h * h).sum()
        results.append((y, h, *torch.autograd.grad(loss, [dt, A, B, C, x, h0])))
    for e, g in zip(*results):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-12)


def test_chunked_scan_keeps_no_per_token_state_for_backward():
    b, l, e, n = 2, 512, 8, 16
    inputs = scan_inputs(b, l, e, n, dtype=torch.float32)
    full = b * l * e * n * 4  # one (b, l, e, n) float32 tensor
    assert saved_bytes(selective_scan_reference, inputs) > 3 * full
    # the inputs themselves plus one (b, e, n) state per 32-token chunk, nothing per token and state
    inputs_bytes = 4 * (2 * b * l * e + 2 * b * l * n + e * n)
    assert saved_bytes(lambda *t: selective_scan(*t, chunk=32)[0], inputs) == inputs_bytes + 4 * (l // 32) * b * e * n


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_mamba_chunked_and_loop_agree_on_outputs_and_parameter_gradients(dtype, tol):
    torch.manual_seed(0)
    chunked = Mamba(16, d_state=8, scan="chunked", scan_chunk=10).to(dtype)
    loop = Mamba(16, d_state=8, scan="loop").to(dtype)
    loop.load_state_dict(chunked.state_dict())
    hidden = torch.randn(2, 45, 16, dtype=dtype)
    results = []
    for m in (chunked, loop):
        y = m(hidden)
        y.float().square().mean().backward()
        results.append((y.detach().float(), {k: p.grad.float() for k, p in m.named_parameters()}))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=tol, atol=tol)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=tol, atol=tol * g2[k].abs().max().item(), msg=k)


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
    torch.testing.assert_close(selective_scan(dt, A, B, C, x)[0], torch.stack(ys, 1), rtol=1e-5, atol=1e-5)


def test_mamba_has_mamba_ssm_parameter_names_and_shapes():
    m = Mamba(32, d_state=16, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert set(shapes) == MAMBA_SSM_NAMES
    assert shapes["in_proj.weight"] == (128, 32) and shapes["A_log"] == (64, 16)
    assert shapes["x_proj.weight"] == (2 + 32, 64) and shapes["conv1d.weight"] == (64, 1, 4)


def test_mamba_is_causal():
    torch.manual_seed(0)
    assert_causal(Mamba(16, d_state=4), width=16)
