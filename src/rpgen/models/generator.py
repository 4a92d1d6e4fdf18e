"""The RPG generator: positions + permutation state -> backbone -> prototypes -> denoiser.

Glossary: ``B`` checkpoints in a batch, ``L`` tokens per model, ``N`` tokens sent through the
denoiser, ``D`` d_model, ``S`` token size, ``C`` condition length, ``J`` permutation states.

A *conditional* generator (built with ``cond_dim``) replaces the permutation-state embedding by a
condition encoder (an MLP ``C -> D -> D``): wherever an unconditional generator takes ``(B,)``
permutation-state indices, a conditional one takes ``(B, C)`` condition vectors. An
unconditional generator also takes ``(B, J)`` float *mixtures* of its ``J`` states (rows of
weights): the selector is then that weighted sum of state embeddings, a state between runs.
A conditional generator built ``with_state`` keeps the state embedding beside the condition
encoder and takes ``(B, C + J)``: the condition, then the state's one-hot row (or a mixture);
its selector is the sum of both. The state says which of several solutions shared across
conditions (one per initialisation seed, say) a model follows, chosen once per model.

The selector (state embedding or encoded condition) is added to the projected position
embedding and, with ``model.film``, also scales and shifts it (FiLM: ``x * (1 + scale) + shift``,
zero-initialised so training starts from the additive model).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rpgen.config import ModelConfig
from rpgen.models.backbones import build_backbone
from rpgen.models.denoiser import ConvDenoiser


def position_embedding(positions: Tensor, dim: int) -> Tensor:
    """2-D sinusoidal embedding of (L, 2) (tensor index, token index) -> (L, dim).

    Half of the channels encode the tensor index, half the token index within the tensor.
    """
    half = dim // 2
    out = []
    for column in positions.unbind(-1):
        quarter = half // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, dtype=torch.float64) / quarter)
        args = column.double().unsqueeze(-1) * freqs  # (L, quarter)
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        out.append(nn.functional.pad(emb, (0, half - emb.shape[-1])))
    return torch.cat(out, dim=-1).float()  # (L, 2 * half)


class PrototypeNet(nn.Module):
    """Positions + permutation state (or condition) -> backbone -> one prototype per token.

    The part every token-wise method shares; a method adds what turns prototypes into tokens
    (RPG: :class:`Generator`'s conv denoiser; the mse ablation: a linear head).
    """

    def __init__(self, cfg: ModelConfig, *, positions: Tensor, num_states: int, token_size: int,
                 cond_dim: int | None = None, with_state: bool = False) -> None:
        super().__init__()
        self.num_states = num_states
        self.token_size = token_size
        self.cond_dim = cond_dim
        self.with_state = cond_dim is None or with_state  # a permutation-state embedding
        self.register_buffer("pos_emb", position_embedding(positions, cfg.d_model), persistent=False)  # (L, D)
        self.input_proj = nn.Linear(cfg.d_model, cfg.d_model)
        if self.with_state:
            self.permutation_state = nn.Embedding(num_states, cfg.d_model)
            nn.init.normal_(self.permutation_state.weight, std=0.5)
        if cond_dim is not None:
            self.condition_encoder = nn.Sequential(nn.Linear(cond_dim, cfg.d_model), nn.SiLU(),
                                                   nn.Linear(cfg.d_model, cfg.d_model))
        self.film = nn.Linear(cfg.d_model, 2 * cfg.d_model) if cfg.film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.backbone = build_backbone(cfg, seq_len=positions.shape[0])

    @property
    def num_tokens(self) -> int:
        return self.pos_emb.shape[0]

    @property
    def conditional(self) -> bool:
        return self.cond_dim is not None

    def prototypes(self, states: Tensor) -> Tensor:
        """(B,) permutation-state indices or (B, J) state mixtures, or (B, C) conditions if
        conditional ((B, C + J) conditions and state rows if also ``with_state``) -> (B, L, D)
        prototypes."""
        if self.cond_dim is not None:
            states = states.to(self.pos_emb.dtype)
            selector = self.condition_encoder(states[:, :self.cond_dim])  # (B, D)
            if self.with_state:
                selector = selector + states[:, self.cond_dim:] @ self.permutation_state.weight  # (B, J) @ (J, D)
        elif states.is_floating_point():
            selector = states.to(self.pos_emb.dtype) @ self.permutation_state.weight  # (B, J) @ (J, D) -> (B, D)
        else:
            selector = self.permutation_state(states)  # (B, D)
        x = self.input_proj(self.pos_emb).unsqueeze(0)  # (1, L, D)
        if self.film is not None:
            scale, shift = self.film(selector).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
            x = x * (1 + scale) + shift  # (B, L, D)
        return self.backbone(x + selector.unsqueeze(1))  # (B, L, D)


class Generator(PrototypeNet):
    """RPG: prototypes from the backbone, and a conv denoiser that turns noise into tokens given them."""

    def __init__(self, cfg: ModelConfig, *, positions: Tensor, num_states: int, token_size: int,
                 cond_dim: int | None = None, with_state: bool = False) -> None:
        super().__init__(cfg, positions=positions, num_states=num_states, token_size=token_size, cond_dim=cond_dim,
                         with_state=with_state)
        self.denoiser = ConvDenoiser(token_size=token_size, cond_dim=cfg.d_model,
                                     channels=tuple(cfg.denoiser_channels), kernel_size=cfg.kernel_size)

    def denoise(self, noisy: Tensor, t: Tensor, prototypes: Tensor) -> Tensor:
        """noisy: (N, S), t: (N,), prototypes: (N, D) -> (N, S) denoiser output."""
        return self.denoiser(noisy, t, prototypes)

    def forward(self, states: Tensor, rows: Tensor, noisy: Tensor, t: Tensor) -> Tensor:
        """Training pass: backbone over whole sequences, denoiser on a subset of their tokens.

        states: (B,) permutation states, or (B, C) conditions if conditional ((B, C + J) if also
        with a state); rows: (N,) indices
        into the B * L tokens of the batch; noisy: (N, S); t: (N,) -> (N, S).
        """
        protos = self.prototypes(states)  # (B, L, D)
        protos = protos.reshape(-1, protos.shape[-1])[rows]  # (N, D)
        return self.denoise(noisy, t, protos)
