"""The no-diffusion ablation (``model.method = "mse"``): backbone + a linear head regressing tokens.

Glossary: ``B`` checkpoints in a batch, ``L`` tokens per model, ``S`` token size, ``D`` prototype
width.

Training minimises the MSE between the head's output and the normalised tokens (every token of the
batch, NaN padding excluded); generation is one forward pass per permutation state, no sampler and
no noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rpgen.config import Config, ModelConfig
from rpgen.methods.base import TrainingSet, states_beside_condition
from rpgen.methods.tokens import TokenMethod, masked_mse
from rpgen.models.generator import PrototypeNet
from rpgen.data.tokenizer import Layout


class RegressionGenerator(PrototypeNet):
    """Prototypes -> tokens by one linear map."""

    def __init__(self, cfg: ModelConfig, *, positions: Tensor, num_states: int, token_size: int,
                 cond_dim: int | None = None, with_state: bool = False) -> None:
        super().__init__(cfg, positions=positions, num_states=num_states, token_size=token_size, cond_dim=cond_dim,
                         with_state=with_state)
        self.head = nn.Linear(cfg.d_model, token_size)

    def forward(self, states: Tensor) -> Tensor:
        """states: (B,), (B, C) or (B, C + K) (see :meth:`PrototypeNet.prototypes`) -> (B, L, S) predicted tokens."""
        return self.head(self.prototypes(states))


class MSE(TokenMethod):
    name = "mse"

    def build(self, config: Config, layout: Layout, *, num_states: int, cond_dim: int | None) -> RegressionGenerator:
        return RegressionGenerator(config.model, positions=layout.positions(), num_states=num_states,
                                   token_size=layout.token_size, cond_dim=cond_dim,
                                   with_state=states_beside_condition(config, cond_dim is not None))

    def draw_rows(self, num_tokens: int, data: TrainingSet, *, rng: torch.Generator) -> Tensor:
        return torch.arange(num_tokens)  # every token of the batch

    def token_loss(self, module: nn.Module, x0: Tensor, rows: Tensor, selectors: Tensor, *,
                   data: TrainingSet, batch: int, rng: torch.Generator) -> Tensor:
        pred = module(selectors).reshape(x0.shape)  # (B * L, S), rows in order
        return masked_mse(pred, torch.nan_to_num(x0, nan=0.0), ~torch.isnan(x0))

    def tokens(self, model: RegressionGenerator, prototypes: Tensor, *, scheduler: Any,
               rng: torch.Generator) -> Tensor:
        return model.head(prototypes).float()
