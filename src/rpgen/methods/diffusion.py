"""Diffusion pieces shared by the methods: noise schedule, noised inputs and targets, and the
sampling loop over a ``diffusers`` scheduler.

Glossary: ``N`` samples in a batch (tokens for RPG, latents for p-diff), ``...`` the shape of
one sample (``S`` values of a token, or ``(Z, M)`` latent channels x length).

The noise schedule is DDPM's linear betas, computed exactly as diffusers computes it, so a model
trained here samples with any diffusers scheduler built by :func:`make_scheduler`. Random numbers
are drawn on the CPU from the caller's ``torch.Generator`` and then moved, so a seed gives the same
numbers on every device.
"""

from __future__ import annotations

import math
from typing import Any, Callable, get_args

import torch
from torch import Tensor

from rpgen.config import DiffusionConfig, Sampler
from rpgen.errors import RpgenError


def alphas_cumprod(cfg: DiffusionConfig) -> Tensor:
    """(T,) cumulative product of 1 - beta, float32, as in ``diffusers.DDPMScheduler``."""
    betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def noised(x0: Tensor, cfg: DiffusionConfig, *, rng: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A training example for the denoiser: x0 (N, ...) -> (noisy (N, ...), t (N,), target (N, ...)).

    The noise is drawn first, then the timesteps (the order fixes what a seed produces). The
    target is what ``cfg.prediction`` asks the denoiser for: the noise, x0, or v.
    """
    n, device = x0.shape[0], x0.device
    noise = torch.randn(x0.shape, generator=rng, device="cpu").to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (n,), generator=rng, device="cpu").to(device)
    ab = alphas_cumprod(cfg).to(device)[t].view(n, *([1] * (x0.dim() - 1)))  # (N, 1, ...)
    noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    if cfg.prediction == "epsilon":
        target = noise
    elif cfg.prediction == "sample":
        target = x0
    elif cfg.prediction == "v_prediction":
        target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    else:  # pragma: no cover - DiffusionConfig validates it
        raise RpgenError(f"config diffusion.prediction = {cfg.prediction!r} is not supported")
    return noisy, t, target


def check_sampling(cfg: DiffusionConfig, sampler: str, steps: int, temperature: float = 1.0) -> None:
    """One-line errors for a sampler, step count or temperature the schedule cannot use."""
    if sampler not in get_args(Sampler):
        raise RpgenError(f"--sampler {sampler!r}: choose {', '.join(get_args(Sampler))}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise RpgenError(f"--temperature {temperature}: must be a finite number >= 0")
    if sampler == "ddpm" and temperature != 1:
        raise RpgenError(f"--temperature {temperature} needs --sampler ddim or dpm: ddpm adds fresh noise at every "
                         "step, so scaling the first draw does not lower the temperature")
    if steps < 1 or steps > cfg.num_train_timesteps:
        raise RpgenError(f"--steps {steps}: must be between 1 and the {cfg.num_train_timesteps} training timesteps")


def make_scheduler(cfg: DiffusionConfig, sampler: Sampler, steps: int, temperature: float = 1.0) -> Any:
    """A diffusers scheduler matching the training schedule, with ``steps`` set and sampling starting
    from noise of standard deviation ``temperature`` (its ``init_noise_sigma``)."""
    if steps > cfg.num_train_timesteps:
        raise RpgenError(f"--steps {steps}: at most {cfg.num_train_timesteps} sampling steps "
                         "(diffusion.num_train_timesteps of the run)")
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    check_sampling(cfg, sampler, steps, temperature)
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                  beta_end=cfg.beta_end, beta_schedule="linear", prediction_type=cfg.prediction)
    if sampler == "ddpm":
        scheduler = DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
    elif sampler == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=False, timestep_spacing="trailing")
    else:
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    scheduler.init_noise_sigma = scheduler.init_noise_sigma * temperature
    return scheduler


@torch.no_grad()
def sample_loop(denoise: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], scheduler: Any, *,
                rng: torch.Generator | None, device: torch.device | str) -> Tensor:
    """Denoise pure noise of ``shape`` = (N, ...) with ``denoise(x, t) -> model output`` (N, ...),
    starting from standard normal noise times the scheduler's ``init_noise_sigma``.

    The scheduler's timesteps must already be set; it is reset here so that stateful
    (multistep) schedulers can be reused batch after batch.
    """
    scheduler.set_timesteps(len(scheduler.timesteps))
    n = shape[0]
    x = (torch.randn(shape, generator=rng) * scheduler.init_noise_sigma).to(device)
    for t in scheduler.timesteps:
        out = denoise(x, torch.full((n,), int(t), device=device, dtype=torch.long)).float()
        x = scheduler.step(out, t, x, generator=rng).prev_sample
    return x


CONDITIONAL_TEMPERATURE = 0.25
"""Sampling temperature of a conditional run (:func:`auto_temperature`)."""


def auto_temperature(conditional: bool) -> float:
    """``sample.temperature = "auto"``: 1 for an unconditional run, :data:`CONDITIONAL_TEMPERATURE` for a
    conditional one.

    Given a condition (and a state), a conditional zoo's checkpoints lie close together (on the
    digits-tasks zoos: the last epochs of one training run per task and mode). On the three-mode zoo,
    at temperature 1 the generated models of one task and state lie 167x as far apart as those
    checkpoints, about in proportion to the temperature, and half of them are broken; at 0.25 they
    lie 39x as far apart (7x on the single-mode zoo), distinct for every seed, and score 95.18% on
    the held-out tasks against 95.33% at 0 and 91.86% at 1 (bench/results/unseen_multimodal_default.md,
    bench/results/unseen_tasks.md).
    """
    return CONDITIONAL_TEMPERATURE if conditional else 1.0
