"""p-diff's networks (arXiv 2402.13144): a 1-D conv autoencoder over a whole flattened parameter
vector, and an unconditional denoiser for its latents. Trained by :mod:`rpgen.methods.pdiff`.

Glossary: ``B`` checkpoints in a batch, ``P`` generated parameters, ``Q`` P padded to a multiple
of 2^(number of encoder layers), ``Z`` latent channels, ``M`` latent length.

The autoencoder sees the whole vector at once, so its activations grow linearly with ``P``.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rpgen.config import PDiffConfig
from rpgen.models.denoiser import ConvDenoiser


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ParamAutoencoder(nn.Module):
    """1-D conv autoencoder over a whole flattened parameter vector: (B, P) <-> (B, Z, M).

    Each encoder layer is a stride-2 conv + GroupNorm + LeakyReLU; the decoder mirrors it with
    transposed convs. Noise augmentation is applied only in training mode.
    """

    def __init__(self, cfg: PDiffConfig, *, num_params: int) -> None:
        super().__init__()
        self.num_params = num_params
        self.input_noise = cfg.input_noise
        self.latent_noise = cfg.latent_noise
        self.factor = 2 ** len(cfg.channels)
        self.padded = -(-num_params // self.factor) * self.factor  # Q
        k = cfg.kernel_size
        widths = (1, *cfg.channels)
        enc: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            enc += [nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2), _norm(c_out), nn.LeakyReLU(0.2)]
        enc.append(nn.Conv1d(widths[-1], cfg.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(cfg.latent_channels, widths[-1], 1), _norm(widths[-1]), nn.LeakyReLU(0.2)]
        ups = (*widths[:0:-1], widths[1])  # e.g. (64, 32, 16, 16): one transposed conv per encoder layer
        for c_in, c_out in pairwise(ups):
            dec += [nn.ConvTranspose1d(c_in, c_out, 4, stride=2, padding=1), _norm(c_out), nn.LeakyReLU(0.2)]
        dec.append(nn.Conv1d(widths[1], 1, k, padding=k // 2))
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_length(self) -> int:
        return self.padded // self.factor  # M

    def encode(self, x: Tensor) -> Tensor:
        """(B, P) -> (B, Z, M)"""
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        x = F.pad(x, (0, self.padded - self.num_params)).unsqueeze(1)  # (B, 1, Q)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """(B, Z, M) -> (B, P)"""
        return self.decoder(z).squeeze(1)[:, : self.num_params]

    def forward(self, x: Tensor) -> Tensor:
        """Training pass with both noise augmentations: (B, P) -> (B, P) reconstruction."""
        z = self.encode(x)
        if self.training and self.latent_noise > 0:
            z = z + self.latent_noise * torch.randn_like(z)
        return self.decode(z)


class LatentDenoiser(nn.Module):
    """Unconditional DDPM denoiser on flattened latents: rpgen's conv denoiser over one sequence.

    Latents (B, Z, M) are laid out position-major, (B, M * Z), so a conv sees all latent
    channels of neighbouring positions. A learnt constant condition gives the conv a bias per
    position.
    """

    def __init__(self, cfg: PDiffConfig, *, latent_channels: int, latent_length: int) -> None:
        super().__init__()
        self.shape = (latent_channels, latent_length)
        self.net = ConvDenoiser(token_size=latent_channels * latent_length, cond_dim=1,
                                channels=tuple(cfg.denoiser_channels), kernel_size=cfg.kernel_size)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """z: (B, Z, M) noisy latents, t: (B,) -> (B, Z, M) prediction."""
        b = z.shape[0]
        flat = z.transpose(1, 2).reshape(b, -1)  # (B, M * Z)
        out = self.net(flat, t, torch.ones(b, 1, device=z.device, dtype=z.dtype))
        return out.reshape(b, self.shape[1], self.shape[0]).transpose(1, 2)


class PDiffModel(nn.Module):
    """Everything a p-diff run saves: the autoencoder (``ae.*``), the latent denoiser
    (``denoiser.*``) and the latents' normalisation (``latent_mean``, ``latent_std``)."""

    def __init__(self, cfg: PDiffConfig, *, num_params: int) -> None:
        super().__init__()
        self.ae = ParamAutoencoder(cfg, num_params=num_params)
        self.denoiser = LatentDenoiser(cfg, latent_channels=cfg.latent_channels, latent_length=self.ae.latent_length)
        self.register_buffer("latent_mean", torch.zeros(1))
        self.register_buffer("latent_std", torch.ones(1))
