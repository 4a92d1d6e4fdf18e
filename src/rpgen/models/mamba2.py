"""Mamba-2: the selective state-space mixer computed with the chunked state space duality (SSD).

Glossary: ``b`` batch, ``l`` tokens, ``d`` d_model, ``e`` d_inner (expand * d), ``h`` heads,
``p`` head dim (e = h p), ``n`` d_state, ``c`` chunks, ``q`` tokens in a chunk, ``g`` chunks in a
block of the recurrence between chunks.

Per head the recurrence is ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T`` (a (p, n) state with one
scalar decay per head and token) and ``y_t = h_t C_t + D x_t``. SSD computes it without a loop over
tokens: inside a chunk of q tokens the outputs are masked matrix products with the cumulative
decays ("segsum"), and only one state per chunk is carried from chunk to chunk, in blocks of
:data:`STATE_BLOCK` chunks that are again matrix products. The loop left is over blocks of
``q * STATE_BLOCK`` tokens. Every decay is exp of a non-positive number, so nothing can overflow.

:class:`Mamba2` has the parameter names of ``mamba_ssm.Mamba2`` (in_proj, conv1d, dt_bias, A_log,
D, norm.weight, out_proj) with its defaults ngroups = 1, D per head, gated RMSNorm after the
gate, no projection biases: a generator trained with the CUDA kernels loads here and the reverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SSD_CHUNK = 64
"""Default tokens per chunk (``model.ssd_chunk``): quadratic work within a chunk, a recurrence between chunks."""
STATE_BLOCK = 16
"""Chunks whose entering states are computed together in one matrix product."""


def ssd_reference(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                  h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The recurrence token by token (the test oracle).

    x: (b, l, h, p); dt: (b, l, h) step sizes (after softplus); A: (h,) negative; B, C: (b, l, n);
    h0: (b, h, p, n) state before the first token (zeros if None) -> y: (b, l, h, p) (without the
    D skip) and the state after the last token, (b, h, p, n).
    """
    b, l, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1]) if h0 is None else h0
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (b, h, 1, 1)
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]  # (b, h, p, n)
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1), state


def _masked_exp(diff: Tensor, mask: Tensor) -> Tensor:
    """exp(diff) where ``mask``, else 0; masked entries never reach exp (they may be large)."""
    return torch.exp(diff.masked_fill(~mask, -math.inf))


def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, *, chunk: int = SSD_CHUNK,
        h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`ssd_reference` in chunks of ``chunk`` tokens, computed in float32 (float64 stays).

    Same arguments and results. A length that ``chunk`` does not divide is padded with tokens of
    step 0 (decay 1, no input), which leave the state as it is.
    """
    if chunk < 1:
        raise ValueError(f"ssd: chunk must be >= 1, got {chunk}")
    out_dtype = x.dtype
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, dt, B, C = (t.to(work) for t in (x, dt, B, C))
    A = A.to(work)
    b, l, h, p = x.shape
    n = B.shape[-1]
    c = -(-l // chunk)
    pad = c * chunk - l
    if pad:
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    q = chunk
    xd = (x * dt.unsqueeze(-1)).view(b, c, q, h, p).permute(0, 3, 1, 2, 4).contiguous()  # (b, h, c, q, p)
    a = (dt * A).view(b, c, q, h).permute(0, 3, 1, 2)  # (b, h, c, q) log decays, <= 0
    B = B.view(b, c, q, n).unsqueeze(1)  # (b, 1, c, q, n)
    C = C.view(b, c, q, n).unsqueeze(1)  # (b, 1, c, q, n)
    # Cumulative log decays in float64: their differences, decays between two tokens, keep the
    # precision of one token's decay even where a chunk's total is large.
    cs64 = torch.cumsum(a.double(), dim=-1)  # (b, h, c, q)
    cs = cs64.to(work)

    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()  # (q, q): i >= j
    decay_ij = _masked_exp((cs64.unsqueeze(-1) - cs64.unsqueeze(-2)).to(work), causal)  # (b, h, c, q, q)
    scores = C @ B.transpose(-1, -2)  # (b, 1, c, q, q): C_i . B_j
    y = (scores * decay_ij) @ xd  # (b, h, c, q, p): the tokens of a chunk on each other

    to_end = torch.exp(cs[..., -1:] - cs).unsqueeze(-1)  # (b, h, c, q, 1)
    states = (B * to_end).transpose(-1, -2) @ xd  # (b, h, c, n, p): each chunk's input, at its end
    start = x.new_zeros(b, h, n, p) if h0 is None else h0.to(work).transpose(-1, -2)  # (b, h, n, p)
    entering, last = _chunk_states(cs[..., -1], states, start)  # (b, h, c, n, p), (b, h, n, p)
    y = y + (C * torch.exp(cs).unsqueeze(-1)) @ entering  # (b, h, c, q, p): the state before the chunk
    y = y.permute(0, 2, 3, 1, 4).reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    return y.to(out_dtype), last.transpose(-1, -2).to(out_dtype)


def _chunk_states(log_decay: Tensor, states: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
    """The state entering every chunk: ``H_0 = start``, ``H_{k+1} = exp(log_decay_k) H_k + states_k``.

    log_decay: (b, h, c) of each whole chunk; states: (b, h, c, n, p); start: (b, h, n, p) ->
    (entering (b, h, c, n, p), the state after the last chunk (b, h, n, p)). Blocks of
    :data:`STATE_BLOCK` chunks are one masked matrix product each.
    """
    b, h, c, n, p = states.shape
    out = []
    for s in range(0, c, STATE_BLOCK):
        ld, st = log_decay[..., s:s + STATE_BLOCK], states[:, :, s:s + STATE_BLOCK]  # (b, h, g), (b, h, g, n, p)
        g = ld.shape[-1]
        ccs = torch.cumsum(ld.double(), dim=-1)  # (b, h, g), in float64 as in :func:`ssd`
        before = F.pad(ccs, (1, 0))  # (b, h, g + 1): log decay from the block's start to chunk k
        mask = torch.ones(g + 1, g, dtype=torch.bool, device=ld.device).tril(-1)  # (g + 1, g): j < k
        w = _masked_exp((before.unsqueeze(-1) - ccs.unsqueeze(-2)).to(st.dtype), mask)  # (b, h, g + 1, g)
        block = (w @ st.reshape(b, h, g, n * p)).view(b, h, g + 1, n, p)
        block = block + torch.exp(before.to(st.dtype))[..., None, None] * start.unsqueeze(2)  # (b, h, g + 1, n, p)
        out.append(block[:, :, :g])
        start = block[:, :, g]
    return torch.cat(out, dim=2), start


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``nn.Conv1d(k, k, w, groups=k)`` over tokens whose first w - 1 are the causal padding, in the
    (b, l, k) layout: x (b, w - 1 + l, k), weight (k, 1, w), bias (k,) -> (b, l, k).

    A sum of w shifted products: no transposes between the (b, l, k) and (b, k, l) layouts."""
    w = weight.shape[-1]
    l = x.shape[1] - w + 1
    out = x[:, :l] * weight[:, 0, 0]
    for k in range(1, w):
        out = out + x[:, k:k + l] * weight[:, 0, k]
    return out if bias is None else out + bias


class RMSNormGated(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over the last dim (mamba_ssm's RMSNorm, norm_before_gate=False)."""

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        """y, z: (..., e) -> (..., e)"""
        work = torch.promote_types(z.dtype, torch.float32)
        y = y.to(work) * F.silu(z.to(work))
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(work)).to(z.dtype)


class Mamba2(nn.Module):
    """Pure-PyTorch Mamba-2 mixer with mamba_ssm.Mamba2's parameter names and initialisation."""

    def __init__(self, d_model: int, *, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 chunk: int = SSD_CHUNK) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: headdim {headdim} must divide d_inner {self.d_inner}")
        self.d_state, self.headdim, self.chunk = d_state, headdim, chunk
        self.nheads = self.d_inner // headdim
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)  # z, xBC, dt
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        # Initialisation as in mamba_ssm: dt in [1e-3, 1e-1] log-uniform, A uniform in [1, 16].
        dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNormGated(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        """(b, l, d) -> (b, l, d)"""
        return self.segment(hidden)[0]

    def segment(self, hidden: Tensor, tail: Tensor | None = None,
                h0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The layer over tokens that continue a sequence: hidden (b, l, d), ``tail`` the last
        d_conv - 1 inputs of the causal conv before them, (b, d_conv - 1, e + 2n), and ``h0`` the
        state, (b, h, p, n) (zeros for both if None) -> (output (b, l, d), tail and state after)."""
        b, l, _ = hidden.shape
        z, xbc, dt = self.in_proj(hidden).split([self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], dim=-1)
        if tail is None:
            tail = xbc.new_zeros(b, self.conv1d.kernel_size[0] - 1, xbc.shape[-1])
        xbc = torch.cat([tail, xbc], dim=1)  # (b, d_conv - 1 + l, e + 2n)
        tail = xbc[:, xbc.shape[1] - tail.shape[1]:].clone()  # a copy: a view would keep all of xbc alive
        x, B, C = F.silu(causal_depthwise_conv(xbc, self.conv1d.weight, self.conv1d.bias)).split(
            [self.d_inner, self.d_state, self.d_state], dim=-1)
        work = torch.promote_types(dt.dtype, torch.float32)  # the step sizes and decays in float32 at least
        dt = F.softplus(dt.to(work) + self.dt_bias.to(work))  # (b, l, h)
        A = -torch.exp(self.A_log.to(work))  # (h,)
        xh = x.reshape(b, l, self.nheads, self.headdim)  # (b, l, h, p)
        y, h = ssd(xh, dt, A, B, C, chunk=self.chunk, h0=h0)  # (b, l, h, p), (b, h, p, n)
        y = y.to(x.dtype) + xh * self.D.to(x.dtype)[:, None]
        return self.out_proj(self.norm(y.reshape(b, l, self.d_inner), z)), tail, h
