"""The denoiser: a 1-D conv UNet over one token, conditioned on its prototype and timestep.

Glossary: ``N`` tokens in the batch, ``S`` token size, ``H`` conv channels (``H_in``, ``H_out`` of
one layer), ``D`` prototype width.
The prototype and the time embedding are injected before every conv layer as
``conv((x + c) * (1 + t))`` (the paper's ``conv((x + c) * t)``, shifted so a zero time
embedding is the identity). GroupNorm is used instead of BatchNorm: it normalises each token
on its own, so training (mixed timesteps) and sampling (one timestep) behave the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, *, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (N,) timesteps -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * freqs  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ConditionedConv(nn.Module):
    """One layer: inject condition (per channel and per position) and time, then conv + norm + ELU."""

    def __init__(self, c_in: int, c_out: int, *, token_size: int, cond_dim: int, time_dim: int,
                 kernel_size: int, last: bool = False) -> None:
        super().__init__()
        self.cond_channel = nn.Linear(cond_dim, c_in)
        self.cond_position = nn.Linear(cond_dim, token_size)
        self.time_scale = nn.Linear(time_dim, c_in)
        nn.init.zeros_(self.time_scale.weight)
        nn.init.zeros_(self.time_scale.bias)
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = None if last else nn.GroupNorm(math.gcd(8, c_out), c_out)

    def forward(self, x: Tensor, cond: Tensor, temb: Tensor) -> Tensor:
        """x: (N, H_in, S), cond: (N, D), temb: (N, time_dim) -> (N, H_out, S)"""
        c = self.cond_channel(cond).unsqueeze(-1) + self.cond_position(cond).unsqueeze(1)  # (N, H_in, S)
        x = self.conv((x + c) * (1 + self.time_scale(temb).unsqueeze(-1)))
        return x if self.norm is None else F.elu(self.norm(x))


class ConvDenoiser(nn.Module):
    """UNet-shaped stack of :class:`ConditionedConv` with additive skip connections.

    ``channels`` is symmetric, e.g. (1, 32, 64, 128, 64, 32, 1): the output of encoder layer i
    is added to the input of the decoder layer with the same width.
    """

    def __init__(self, *, token_size: int, cond_dim: int, channels: tuple[int, ...] = (1, 32, 64, 128, 64, 32, 1),
                 kernel_size: int = 7, time_dim: int = 128) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        n = len(channels) - 1
        self.layers = nn.ModuleList(
            ConditionedConv(channels[i], channels[i + 1], token_size=token_size, cond_dim=cond_dim,
                            time_dim=time_dim, kernel_size=kernel_size, last=i == n - 1)
            for i in range(n)
        )
        self.num_down = n // 2

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x: (N, S) noisy tokens, t: (N,) timesteps, cond: (N, D) prototypes -> (N, S)"""
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = x.unsqueeze(1)  # (N, 1, S)
        skips = []
        for i, layer in enumerate(self.layers):
            if i > self.num_down:
                h = h + skips.pop()
            h = layer(h, cond, temb)
            if i < self.num_down - 1:
                skips.append(h)
        return h.squeeze(1)
