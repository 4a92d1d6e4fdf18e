"""Mamba-1: the selective state-space mixer, with a scan over tokens chunk by chunk.

Glossary: ``b`` batch, ``l`` tokens, ``d`` d_model, ``e`` d_inner (expand * d), ``n`` d_state,
``r`` dt_rank, ``t`` tokens in one chunk of the scan.

:class:`Mamba` uses the parameter names of ``mamba_ssm.Mamba`` (in_proj, conv1d, x_proj, dt_proj,
A_log, D, out_proj). Its decay is per channel and state (e, n), so the scan keeps a (b, e, n)
state per token inside a chunk; a parallel (doubling) scan inside chunks was measured slower on
CPU (bench/results/scan.md). Mamba-2 (:mod:`rpgen.models.mamba2`) has one decay per head and
needs no loop over tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rpgen.config import ModelConfig

SCAN_CHUNK: int = ModelConfig.scan_chunk
"""Default tokens per chunk of :func:`selective_scan` (``model.scan_chunk``; bench/results/scan.md)."""


def selective_scan_reference(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor) -> Tensor:
    """Selective state-space scan, the reference recurrence (the test oracle, and ``scan = "loop"``).

    dt, x: (b, l, e); A: (e, n); B, C: (b, l, n) -> y: (b, l, e) with
    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`` and ``y_t = C_t . h_t``.
    Holds (b, l, e, n) tensors for the decay, the input and every state, and autograd records
    every step. The per-step tensors come from ``unbind`` (one backward op for all steps, not one
    full-size scatter per step, which made backward 15x slower).
    """
    decay = torch.exp(dt.unsqueeze(-1) * A)  # (b, l, e, n)
    u = (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (b, l, e, n)
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])  # (b, e, n)
    states = []
    for a_t, u_t in zip(decay.unbind(1), u.unbind(1)):
        h = a_t * h + u_t
        states.append(h)
    return torch.einsum("bten,btn->bte", torch.stack(states, dim=1), C)


def selective_scan(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, *, chunk: int = SCAN_CHUNK,
                   h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The recurrence of :func:`selective_scan_reference`, chunk by chunk, in O(b l e + b chunk e n) memory.

    dt, x: (b, l, e); A: (e, n); B, C: (b, l, n); h0: (b, e, n) state before the first token (zeros
    if None) -> y: (b, l, e) and the state after the last token, (b, e, n), so a sequence can be
    scanned in segments. Only one chunk's (t, b, e, n) tensors (t = ``chunk`` tokens) are alive at a
    time; the state entering each chunk, (b, e, n), is kept for backward, which recomputes each
    chunk's states and runs the adjoint recurrence backwards through it. Same operations in the same
    order as the reference, so the outputs agree to round-off; all decays are exp(dt A) <= 1 (A < 0),
    so nothing can overflow.
    """
    if chunk < 1:
        raise ValueError(f"selective_scan: chunk must be >= 1, got {chunk}")
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    return _ChunkedScan.apply(dt, A, B, C, x, h0, chunk)


def _time_major(t: Tensor, s: slice) -> Tensor:
    """Tokens ``s`` of a (b, l, k) tensor as a contiguous (t, b, k) tensor."""
    return t[:, s].transpose(0, 1).contiguous()  # (t, b, k)


def _chunk_terms(dt: Tensor, A: Tensor, B: Tensor, x: Tensor, s: slice,
                 h0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Decays and states of the tokens ``s`` after state h0, time-major.

    Returns a: (t, b, e, n); H: (t + 1, b, e, n) = h0 then ``h_t = a_t h_{t-1} + dt_t x_t B_t``;
    dt and dt*x: (t, b, e).
    """
    dt_c = _time_major(dt, s)  # (t, b, e)
    dtx = dt_c * _time_major(x, s)  # (t, b, e)
    a = torch.exp(dt_c.unsqueeze(-1) * A)  # (t, b, e, n)
    H = a.new_empty((a.shape[0] + 1, *a.shape[1:]))  # (t + 1, b, e, n)
    H[0] = h0
    torch.mul(dtx.unsqueeze(-1), _time_major(B, s).unsqueeze(2), out=H[1:])  # inputs u_t: (t, b, e, n)
    hs = H.unbind(0)
    for a_t, prev, h in zip(a.unbind(0), hs, hs[1:]):
        h.addcmul_(a_t, prev)  # in place: cheaper per call than out=
    return a, H, dt_c, dtx


class _ChunkedScan(torch.autograd.Function):
    """Forward and backward of the selective scan, one chunk at a time (see :func:`selective_scan`).

    Backward, with G_t = dL/dh_t: ``G_t = C_t gy_t + a_{t+1} G_{t+1}`` (run from the last token),
    du_t = G_t and da_t = G_t h_{t-1}; the chain rule through a = exp(dt A) and u = dt x B gives
    the gradients of dt, A, B and x; dC_t = h_t . gy_t.
    """

    @staticmethod
    def forward(ctx, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, h0: Tensor,
                chunk: int) -> tuple[Tensor, Tensor]:
        l = dt.shape[1]
        y = torch.empty_like(x)  # (b, l, e)
        h = h0  # (b, e, n)
        starts = []
        for start in range(0, l, chunk):
            s = slice(start, min(start + chunk, l))
            starts.append(h)
            _, H, _, _ = _chunk_terms(dt, A, B, x, s, h)  # (t + 1, b, e, n)
            h = H[-1].clone()  # a copy: a view would keep the whole chunk alive in ``starts``
            y[:, s] = torch.einsum("tben,tbn->tbe", H[1:], _time_major(C, s)).transpose(0, 1)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(dt, A, B, C, x, torch.stack(starts))  # starts: (chunks, b, e, n)
            ctx.chunk = chunk
        return y, h

    @staticmethod
    def backward(ctx, gy: Tensor, g_last: Tensor) -> tuple[Tensor | None, ...]:
        dt, A, B, C, x, starts = ctx.saved_tensors
        chunk, l = ctx.chunk, dt.shape[1]
        d_dt, dx, dB, dC = torch.empty_like(dt), torch.empty_like(x), torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)  # (e, n)
        carry = g_last  # dL/dh from after the chunk (the next chunk's a_{t+1} G_{t+1}): (b, e, n)
        for c in reversed(range(starts.shape[0])):
            s = slice(c * chunk, min((c + 1) * chunk, l))
            a, H, dt_c, dtx = _chunk_terms(dt, A, B, x, s, starts[c])  # H: (t + 1, b, e, n)
            gy_c = _time_major(gy, s)  # (t, b, e)
            dC[:, s] = torch.einsum("tben,tbe->tbn", H[1:], gy_c).transpose(0, 1)
            G = gy_c.unsqueeze(-1) * _time_major(C, s).unsqueeze(2)  # (t, b, e, n)
            G[-1] += carry
            Gs, As = G.unbind(0), a.unbind(0)
            for t in range(len(Gs) - 2, -1, -1):
                Gs[t].addcmul_(As[t + 1], Gs[t + 1])
            carry = a[0] * G[0]
            GB = torch.einsum("tben,tbn->tbe", G, _time_major(B, s))  # (t, b, e)
            dx[:, s] = (GB * dt_c).transpose(0, 1)
            dB[:, s] = torch.einsum("tben,tbe->tbn", G, dtx).transpose(0, 1)
            q = G.mul_(H[:-1]).mul_(a)  # dL/d(dt A): (t, b, e, n)
            d_dt[:, s] = (GB * _time_major(x, s) + torch.einsum("tben,en->tbe", q, A)).transpose(0, 1)
            dA += q.mul_(dt_c.unsqueeze(-1)).sum((0, 1))  # faster than einsum's permuted copy
        return d_dt, dA, dB, dC, dx, carry, None  # carry: dL/dh0


class Mamba(nn.Module):
    """Pure-PyTorch Mamba mixer with mamba_ssm.Mamba's parameter names."""

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 scan: Literal["chunked", "loop"] = "chunked", scan_chunk: int = SCAN_CHUNK) -> None:
        super().__init__()
        self.scan, self.scan_chunk = scan, scan_chunk
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # Initialisation as in mamba_ssm: dt in [1e-3, 1e-1] log-uniform, S4D-real A.
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, hidden: Tensor) -> Tensor:
        """(b, l, d) -> (b, l, d)"""
        return self.segment(hidden)[0]

    def segment(self, hidden: Tensor, tail: Tensor | None = None,
                h0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The layer over tokens that continue a sequence: hidden (b, l, d), ``tail`` the last
        d_conv - 1 inputs of the causal conv before them, (b, d_conv - 1, e), and ``h0`` the scan's
        state, (b, e, n) (zeros for both if None: the sequence starts here) -> (output (b, l, d),
        the tail and state after these tokens). The state is None with ``scan = "loop"``, which
        only runs whole sequences.
        """
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, l, e) each
        if tail is None:
            tail = x.new_zeros(x.shape[0], self.conv1d.kernel_size[0] - 1, x.shape[2])
        x = torch.cat([tail, x], dim=1)  # (b, d_conv - 1 + l, e)
        tail = x[:, x.shape[1] - tail.shape[1]:].clone()  # a copy: a view would keep all of x alive
        x = F.conv1d(x.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
        x = F.silu(x.transpose(1, 2))  # (b, l, e)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (b, l, e)
        A = -torch.exp(self.A_log.float())  # (e, n)
        args = (dt.float(), A, B.float(), C.float(), x.float())
        if self.scan == "chunked":
            y, h = selective_scan(*args, chunk=self.scan_chunk, h0=h0)
        elif h0 is None:
            y, h = selective_scan_reference(*args), None
        else:
            raise ValueError('Mamba.segment: scan = "loop" does not continue a sequence from a state')
        y = y.to(x.dtype)
        y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y), tail, h
