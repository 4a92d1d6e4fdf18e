"""Diffusion: the training loss and the sampling loop over a ``diffusers`` scheduler.

Glossary: ``B`` checkpoints, ``L`` tokens per model, ``S`` token size, ``N`` tokens in a
denoiser batch, ``D`` prototype width.

The noise schedule is DDPM's linear betas; it is computed exactly as diffusers computes it, so
a model trained here samples with any diffusers scheduler built by :func:`make_scheduler`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rpgen.config import DiffusionConfig, Sampler
from rpgen.errors import RpgenError
from rpgen.models.generator import Generator


def alphas_cumprod(cfg: DiffusionConfig) -> Tensor:
    """(T,) cumulative product of 1 - beta, float32, as in ``diffusers.DDPMScheduler``."""
    betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def training_loss(model: torch.nn.Module, tokens: Tensor, states: Tensor, cfg: DiffusionConfig, *,
                  diffusion_batch: int, rng: torch.Generator | None = None) -> Tensor:
    """Masked MSE of the denoiser on a random subset of the batch's tokens.

    model: a :class:`Generator` (possibly wrapped for distributed training);
    tokens: (B, L, S) normalised tokens with NaN padding; states: (B,) permutation states, or
    (B, C) condition vectors for a conditional generator.
    The backbone runs over all B * L tokens; only ``diffusion_batch`` of them are denoised.
    """
    b, l, s = tokens.shape
    rows = draw_rows(b * l, diffusion_batch, rng=rng).to(tokens.device)  # (N,)
    return denoising_loss(model, tokens.reshape(b * l, s)[rows], rows, states, cfg, rng=rng)


def draw_rows(num_tokens: int, diffusion_batch: int, *, rng: torch.Generator | None = None) -> Tensor:
    """(N,) distinct random indices into a batch's ``num_tokens`` = B * L tokens (on the CPU)."""
    return torch.randperm(num_tokens, generator=rng, device="cpu")[:min(diffusion_batch, num_tokens)]


def denoising_loss(model: torch.nn.Module, x0: Tensor, rows: Tensor, states: Tensor, cfg: DiffusionConfig, *,
                   rng: torch.Generator | None = None) -> Tensor:
    """Masked MSE of the denoiser on chosen tokens.

    x0: (N, S) clean tokens (NaN padding) at ``rows`` (N,) of the batch's B * L tokens;
    states: (B,) permutation states, or (B, C) condition vectors for a conditional generator. Only the
    them from disk (see :mod:`rpgen.tokendata`).
    """
    n = x0.shape[0]
    device = x0.device
    mask = ~torch.isnan(x0)
    x0 = torch.nan_to_num(x0, nan=0.0)
    noise = torch.randn(x0.shape, generator=rng, device="cpu").to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (n,), generator=rng, device="cpu").to(device)
    ab = alphas_cumprod(cfg).to(device)[t].unsqueeze(-1)  # (N, 1)
    noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    if cfg.prediction == "epsilon":
        target = noise
    elif cfg.prediction == "sample":
        target = x0
    else:  # v_prediction
        target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    pred = model(states, rows.to(device), noisy, t).float()
    return (pred - target).pow(2)[mask].mean()


def make_scheduler(cfg: DiffusionConfig, sampler: Sampler, steps: int) -> Any:
    """A diffusers scheduler matching the training schedule, with ``steps`` set."""
    if steps > cfg.num_train_timesteps:
        raise RpgenError(f"--steps {steps}: at most {cfg.num_train_timesteps} sampling steps "
                         "(diffusion.num_train_timesteps of the run)")
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                  beta_end=cfg.beta_end, beta_schedule="linear", prediction_type=cfg.prediction)
    if sampler == "ddpm":
        scheduler = DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
        steps = cfg.num_train_timesteps if steps <= 0 else steps
    elif sampler == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=False, timestep_spacing="trailing")
    else:
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def sample_tokens(generator: Generator, prototypes: Tensor, scheduler: Any, *,
                  rng: torch.Generator | None = None) -> Tensor:
    """Denoise one chunk of tokens from pure noise: prototypes (N, D) -> tokens (N, S).

    The scheduler's timesteps must already be set; it is reset here so that stateful
    (multistep) schedulers can be reused chunk after chunk.
    """
    scheduler.set_timesteps(len(scheduler.timesteps))
    n = prototypes.shape[0]
    x = torch.randn((n, generator.token_size), generator=rng).to(prototypes.device)
    for t in scheduler.timesteps:
        t_batch = torch.full((n,), int(t), device=prototypes.device, dtype=torch.long)
        out = generator.denoise(x, t_batch, prototypes).float()
        x = scheduler.step(out, t, x, generator=rng).prev_sample
    return x
