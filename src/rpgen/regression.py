"""The no-diffusion ablation (``model.method = "mse"``): backbone + linear head regressing tokens.

Glossary: ``B`` checkpoints, ``L`` tokens per model, ``S`` token size, ``D`` prototype width.
Training minimises the MSE between the head's output and the normalised tokens (non-NaN entries
only); generation is one forward pass per permutation state, no sampler and no noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rpgen.models.generator import Generator


def regression_loss(model: torch.nn.Module, tokens: Tensor, states: Tensor) -> Tensor:
    """Masked MSE over all tokens of the batch.

    model: a :class:`Generator` built with ``method = "mse"`` (possibly wrapped for distributed
    training); tokens: (B, L, S) normalised tokens with NaN padding; states: (B,).
    """
    b, l, s = tokens.shape
    target = tokens.reshape(b * l, s)  # (B*L, S)
    mask = ~torch.isnan(target)
    rows = torch.arange(b * l, device=tokens.device)
    unused_t = torch.zeros(b * l, dtype=torch.long, device=tokens.device)
    pred = model(states, rows, torch.zeros_like(target), unused_t).float()  # (B*L, S)
    return (pred - torch.nan_to_num(target, nan=0.0)).pow(2)[mask].mean()


@torch.no_grad()
def predict_tokens(generator: Generator, prototypes: Tensor) -> Tensor:
    """prototypes (N, D) -> tokens (N, S), deterministically."""
    n = prototypes.shape[0]
    unused = torch.zeros((n, generator.token_size), device=prototypes.device)
    return generator.denoise(unused, torch.zeros(n, dtype=torch.long, device=prototypes.device), prototypes).float()
