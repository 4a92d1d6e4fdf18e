"""RPG (arXiv 2501.11587): recurrent backbone -> one prototype per token -> conv denoiser (DDPM).

Glossary: ``B`` checkpoints in a batch, ``N`` tokens denoised in a step, ``S`` token size,
``D`` prototype width.

Each step trains the denoiser on ``train.diffusion_batch`` random tokens of the batch while the
backbone runs over the whole sequences, so denoiser memory does not grow with the model size.
Sampling denoises pure noise with a diffusers scheduler, given each token's prototype.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from rpgen.config import Config
from rpgen.methods.diffusion import noised, sample_loop
from rpgen.methods.base import TrainingSet, states_beside_condition
from rpgen.methods.tokens import TokenMethod, masked_mse
from rpgen.models.generator import Generator
from rpgen.data.tokenizer import Layout


class RPG(TokenMethod):
    name = "rpg"

    def build(self, config: Config, layout: Layout, *, num_states: int, cond_dim: int | None) -> Generator:
        return Generator(config.model, positions=layout.positions(), num_states=num_states,
                         token_size=layout.token_size, cond_dim=cond_dim,
                         with_state=states_beside_condition(config, cond_dim is not None))

    def draw_rows(self, num_tokens: int, data: TrainingSet, *, rng: torch.Generator) -> Tensor:
        diffusion_batch = math.ceil(data.config.train.diffusion_batch / data.num_processes)
        return draw_rows(num_tokens, diffusion_batch, rng=rng)

    def token_loss(self, module: nn.Module, x0: Tensor, rows: Tensor, selectors: Tensor, *,
                   data: TrainingSet, batch: int, rng: torch.Generator) -> Tensor:
        mask = ~torch.isnan(x0)
        noisy, t, target = noised(torch.nan_to_num(x0, nan=0.0), data.config.diffusion, rng=rng)
        return masked_mse(module(selectors, rows, noisy, t), target, mask)

    def tokens(self, model: Generator, prototypes: Tensor, *, scheduler: Any, rng: torch.Generator) -> Tensor:
        return sample_loop(lambda x, t: model.denoise(x, t, prototypes), (prototypes.shape[0], model.token_size),
                           scheduler, rng=rng, device=prototypes.device)


def draw_rows(num_tokens: int, diffusion_batch: int, *, rng: torch.Generator | None = None) -> Tensor:
    """(N,) distinct random indices into a batch's ``num_tokens`` = B * L tokens (on the CPU)."""
    return torch.randperm(num_tokens, generator=rng, device="cpu")[:min(diffusion_batch, num_tokens)]
