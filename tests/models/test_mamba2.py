"""Mamba-2: the chunked state space duality against the token-by-token recurrence (outputs, gradients,
states carried across segments, float64 and bf16), the mixer against a plain transcription of
mamba_ssm.Mamba2's reference path, parameter names, causality, no loop over tokens, memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_causal, saved_bytes
from rpgen.config import ModelConfig
from rpgen.models.backbones import build_backbone, kept_floats_per_token
from rpgen.models.mamba2 import STATE_BLOCK, Mamba2, ssd, ssd_reference

# The parameter names of mamba_ssm.Mamba2 (v2.x, modules/mamba2.py) with its defaults (rmsnorm, no bias).
MAMBA2_SSM_NAMES = {"dt_bias", "A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "norm.weight",
                    "out_proj.weight"}


def ssd_inputs(b: int, l: int, h: int, p: int, n: int, *, dtype=torch.float64, dt_max: float = 0.5,
               a_max: float = 3.0, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=g, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=g, dtype=torch.float64) * dt_max
    A = -torch.rand(h, generator=g, dtype=torch.float64) * a_max - 0.01
    B = torch.randn(b, l, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, l, n, generator=g, dtype=torch.float64)
    h0 = torch.randn(b, h, p, n, generator=g, dtype=torch.float64)
    return [t.to(dtype).requires_grad_() for t in (x, dt, A, B, C, h0)]


def outputs_and_grads(fn, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    y, state = fn(*inputs)
    wy = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
    ws = torch.linspace(1, -1, state.numel(), dtype=torch.float64).reshape(state.shape).to(state.dtype)
    loss = (y * wy).sum() + (state * ws).sum()  # a loss that weighs every output and the final state
    return (y.detach(), state.detach(), *torch.autograd.grad(loss, inputs))


NAMES = ["y", "state", "x", "dt", "A", "B", "C", "h0"]


@pytest.mark.parametrize("l, chunk", [(1, 64), (7, 3), (37, 8), (64, 64), (65, 64), (100, 1),
                                      (16 * STATE_BLOCK + 5, 16), (3 * STATE_BLOCK * 4, 4)])
def test_ssd_matches_the_recurrence_forward_and_gradients_float64(l, chunk):
    inputs = ssd_inputs(2, l, 3, 4, 5)
    expected = outputs_and_grads(ssd_reference, inputs)
    got = outputs_and_grads(lambda *t: ssd(*t[:5], chunk=chunk, h0=t[5]), inputs)
    for name, e, g in zip(NAMES, expected, got):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_ssd_in_bf16_stays_near_the_float64_recurrence():
    inputs = ssd_inputs(2, 150, 2, 8, 16, dtype=torch.bfloat16, seed=1)
    exact = outputs_and_grads(ssd_reference, [t.detach().double().requires_grad_() for t in inputs])
    got = outputs_and_grads(lambda *t: ssd(*t[:5], chunk=32, h0=t[5]), inputs)
    for name, e, g in zip(NAMES, exact, got):
        assert g.dtype == torch.bfloat16
        err = (g.double() - e).abs().max() / e.abs().max()
        assert err < 3e-2, f"{name}: relative error {err:.3g}"


@pytest.mark.parametrize("split, chunk", [(20, 8), (1, 64), (37, 5), (64, 16)])
def test_ssd_continues_from_a_state_like_one_pass(split, chunk):
    x, dt, A, B, C, h0 = ssd_inputs(2, 90, 2, 3, 4, seed=2)

    def in_two(x, dt, A, B, C, h0):
        first, h = ssd(x[:, :split], dt[:, :split], A, B[:, :split], C[:, :split], chunk=chunk, h0=h0)
        second, last = ssd(x[:, split:], dt[:, split:], A, B[:, split:], C[:, split:], chunk=chunk, h0=h)
        return torch.cat([first, second], dim=1), last

    expected = outputs_and_grads(ssd_reference, [x, dt, A, B, C, h0])
    for name, e, g in zip(NAMES, expected, outputs_and_grads(in_two, [x, dt, A, B, C, h0])):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_ssd_is_stable_with_strong_decay():
    # dt A down to -400 per token and -25,000 per chunk: exp of a cumulative sum would overflow.
    inputs = ssd_inputs(1, 128, 2, 4, 8, dtype=torch.float32, dt_max=20.0, a_max=20.0, seed=3)
    exact = outputs_and_grads(ssd_reference, [t.detach().double().requires_grad_() for t in inputs])
    got = outputs_and_grads(lambda *t: ssd(*t[:5], chunk=64, h0=t[5]), inputs)
    for name, e, g in zip(NAMES, exact, got):
        assert torch.isfinite(g).all(), name
        err = (g.double() - e).abs().max() / e.abs().max()
        assert err < 2e-5, f"{name}: relative error {err:.3g}"


def mamba2_by_the_book(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """mamba_ssm.Mamba2's forward without its kernels (the ``use_mem_eff_path=False`` branch with
    ``causal_conv1d_fn`` absent and ``rms_norm_ref``), written out with the token-by-token recurrence."""
    b, l, _ = u.shape
    e, n, h = m.d_inner, m.d_state, m.nheads
    z, xbc, dt = torch.split(m.in_proj(u), [e, e + 2 * n, h], dim=-1)
    xbc = F.silu(m.conv1d(xbc.transpose(1, 2)).transpose(1, 2)[:, :-(m.conv1d.kernel_size[0] - 1)])
    x, B, C = torch.split(xbc, [e, n, n], dim=-1)
    dt = F.softplus(dt + m.dt_bias)
    y, _ = ssd_reference(x.reshape(b, l, h, m.headdim), dt, -torch.exp(m.A_log), B, C)
    y = (y + x.reshape(b, l, h, m.headdim) * m.D[:, None]).reshape(b, l, e)
    y = y * F.silu(z)
    y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + 1e-5) * m.norm.weight
    return m.out_proj(y)


def test_mamba2_computes_what_mamba_ssm_defines():
    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, headdim=8, chunk=16).double()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)  # not all ones, so a missing weight would show
        m.D.uniform_(-1, 1)
    u = torch.randn(2, 50, 16, dtype=torch.float64)
    torch.testing.assert_close(m(u), mamba2_by_the_book(m, u), rtol=1e-9, atol=1e-10)


def test_mamba2_has_mamba_ssm_parameter_names_shapes_and_init():
    torch.manual_seed(0)
    m = Mamba2(64, d_state=16, d_conv=4, expand=2, headdim=32)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert set(shapes) == MAMBA2_SSM_NAMES
    # in_proj: [z (128), x (128), B (16), C (16), dt (4 heads)]; conv over x, B, C
    assert shapes["in_proj.weight"] == (2 * 128 + 2 * 16 + 4, 64) and shapes["conv1d.weight"] == (160, 1, 4)
    assert shapes["A_log"] == shapes["D"] == shapes["dt_bias"] == (4,) and shapes["norm.weight"] == (128,)
    A = torch.exp(m.A_log)
    assert ((A >= 1) & (A <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)).all()


def test_a_mamba2_backbone_state_dict_uses_those_names():
    cfg = ModelConfig(backbone="mamba2", d_model=32, d_state=8, mamba_impl="torch")
    names = set(build_backbone(cfg, seq_len=10).state_dict())
    assert {k.split("mixer.", 1)[1] for k in names if ".mixer." in k} == MAMBA2_SSM_NAMES
    assert "layers.1.mixer.A_log" in names and "norm_f.weight" in names


def test_mamba2_is_causal():
    torch.manual_seed(0)
    assert_causal(Mamba2(16, d_state=4, headdim=8, chunk=4), width=16)


def aten_calls(fn) -> int:
    """How many ATen operations ``fn()`` runs, forward and backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def test_ssd_runs_no_loop_over_tokens_or_chunks():
    def run(l: int) -> int:
        inputs = ssd_inputs(1, l, 2, 4, 4, dtype=torch.float32)
        return aten_calls(lambda: ssd(*inputs[:5], chunk=16)[0].sum().backward())

    one_chunk, one_block = run(16), run(16 * STATE_BLOCK)
    assert one_block <= one_chunk + 8  # 16 times the tokens, the same operations but a few views
    assert run(16 * STATE_BLOCK * 4) < 4 * one_chunk  # only the recurrence between blocks repeats


def test_mamba2_kept_activations_are_what_the_memory_estimate_assumes():
    for d_model, d_state, headdim, chunk in [(64, 16, 64, 64), (64, 64, 32, 32), (128, 16, 64, 64), (64, 16, 32, 16)]:
        cfg = ModelConfig(backbone="mamba2", d_model=d_model, d_state=d_state, headdim=headdim, ssd_chunk=chunk)
        m = Mamba2(d_model, d_state=d_state, headdim=headdim, chunk=chunk)
        b, l = 2, 512
        per_token = saved_bytes(m, [torch.randn(b, l, d_model, requires_grad=True)]) / (4 * b * l)
        assert 0.85 * kept_floats_per_token(cfg) <= per_token <= kept_floats_per_token(cfg)


def test_mamba2_settings_are_checked():
    from rpgen.errors import RpgenError

    with pytest.raises(RpgenError, match="model.headdim = 48 must be >= 1 and divide model.expand"):
        ModelConfig(backbone="mamba2", d_model=64, headdim=48)
    with pytest.raises(RpgenError, match="model.ssd_chunk = 0 must be an integer >= 1"):
        ModelConfig(ssd_chunk=0)
