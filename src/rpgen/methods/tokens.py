"""Token-wise methods (rpg and mse): a :class:`~rpgen.models.generator.PrototypeNet` gives one
prototype per token; the method turns prototypes into tokens.

Glossary: ``K`` checkpoints, ``B`` checkpoints in a batch, ``L`` tokens per model, ``S`` token
size, ``N`` tokens in a step's loss, ``D`` prototype width, ``M`` models sampled together, ``J``
permutation states, ``C`` condition length.

Training draws ``B`` checkpoints (their permutation states, or condition vectors) and ``N`` of
their ``B * L`` tokens per step; the backbone runs over whole sequences. Sampling runs the backbone
once per group of models, then turns prototypes into tokens in chunks of ``sample.chunk_tokens``
rows and detokenises each tensor as soon as its last token is in, so peak memory is the model,
one chunk and about one tensor.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import rpgen.methods.memory as memory
from rpgen.config import Config
from rpgen.methods.base import Method, Selector, Stage, TrainingSet
from rpgen.models.generator import PrototypeNet
from rpgen.data.tokens import token_source
from rpgen.data.tokenizer import Layout, TensorAssembler, TensorInfo


class TokenMethod(Method):
    """Shared training step and sampling loop of the token-wise methods."""

    @abstractmethod
    def draw_rows(self, num_tokens: int, data: TrainingSet, *, rng: torch.Generator) -> Tensor:
        """(N,) indices into a step's ``num_tokens`` = B * L tokens whose values the loss needs (CPU)."""

    @abstractmethod
    def token_loss(self, module: nn.Module, x0: Tensor, rows: Tensor, selectors: Tensor, *,
                   data: TrainingSet, batch: int, rng: torch.Generator) -> Tensor:
        """Loss of one step: x0 (N, S) clean tokens (NaN padding) at ``rows`` (N,) of the batch's
        tokens; selectors (B,) states or (B, C) conditions."""

    @abstractmethod
    def tokens(self, model: PrototypeNet, prototypes: Tensor, *, scheduler: Any, rng: torch.Generator) -> Tensor:
        """prototypes (N, D) -> tokens (N, S)."""

    def stages(self, model: nn.Module, data: TrainingSet, *, rng: torch.Generator) -> Iterator[Stage]:
        config, layout, device = data.config, data.layout, data.device
        tc = config.train
        source = token_source(data.checkpoints, layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
        num_checkpoints = len(data.checkpoints)
        batch = math.ceil(min(tc.batch_size, num_checkpoints) / data.num_processes)  # per process
        conditions = None if data.conditions is None else data.conditions.to(device)  # (K, C)
        state_of = data.states.to(device)  # (K,)
        num_states = int(state_of.max()) + 1

        def loss(module: nn.Module) -> Tensor:
            drawn = torch.randint(0, num_checkpoints, (batch,), generator=rng)  # (B,) checkpoint indices
            rows = self.draw_rows(batch * layout.num_tokens, data, rng=rng)  # (N,)
            x0 = source.gather(drawn, rows).to(device)  # (N, S)
            drawn = drawn.to(device)
            if conditions is None:
                selectors = state_of[drawn]  # (B,)
            elif data.states_beside_condition:  # the condition, then the state's one-hot row: (B, C + J)
                selectors = torch.cat([conditions[drawn], F.one_hot(state_of[drawn], num_states).float()], dim=1)
            else:
                selectors = conditions[drawn]  # (B, C)
            return self.token_loss(module, x0, rows.to(device), selectors, data=data, batch=batch, rng=rng)

        yield Stage("generator", "training", model, tc.steps, tc.lr, loss, resumable=True, ema_decay=tc.ema_decay)

    def sample(self, model: nn.Module, layout: Layout, config: Config, selectors: Sequence[Selector], *,
               copied: dict[str, Tensor], scheduler: Any, rng: torch.Generator
               ) -> Iterator[tuple[int, TensorInfo, Tensor]]:
        assemblers = [TensorAssembler(layout) for _ in selectors]
        for m, tokens in self._iter_tokens(model, config, selectors, scheduler=scheduler, rng=rng):
            for info, tensor in assemblers[m].add(tokens):
                yield m, info, tensor

    def _iter_tokens(self, model: PrototypeNet, config: Config, selectors: Sequence[Selector], *, scheduler: Any,
                     rng: torch.Generator) -> Iterator[tuple[int, Tensor]]:
        """Tokens in sequence order: (model index, (n, S) tokens of that model), chunk after chunk."""
        device = model.pos_emb.device
        with torch.no_grad():
            protos = model.prototypes(selector_tensor(selectors, model).to(device))  # (M, L, D)
        m, l, d = protos.shape  # noqa: E741 - the glossary's letters
        protos = protos.reshape(m * l, d)  # (M * L, D)
        chunk = config.sample.chunk_tokens
        for start in range(0, m * l, chunk):
            with torch.no_grad():
                x = self.tokens(model, protos[start:start + chunk], scheduler=scheduler, rng=rng).cpu()  # (n, S)
            pos, stop = start, start + x.shape[0]
            while pos < stop:
                index = pos // l
                end = min(stop, (index + 1) * l)
                yield index, x[pos - start:end - start]
                pos = end

    def models_per_group(self, config: Config, layout: Layout) -> int:
        return max(1, config.sample.chunk_tokens // layout.num_tokens)

    def training_memory(self, config: Config, layout: Layout, *, num_checkpoints: int, num_processes: int,
                        in_memory: bool) -> int | None:
        return memory.training_memory(config, layout, num_checkpoints=num_checkpoints,
                                      num_processes=num_processes, in_memory=in_memory)

    def generation_memory(self, config: Config, layout: Layout, *, num_states: int, models_at_once: int) -> int | None:
        return memory.generation_memory(config, layout, num_states=num_states, models_at_once=models_at_once)


def selector_tensor(selectors: Sequence[Selector], model: PrototypeNet) -> Tensor:
    """(M,) state indices, (M, J) state mixtures (any selector a ``{state: weight}`` dict), (M, C)
    conditions, or (M, C + J) conditions and state rows (selectors ``(condition, state)`` pairs)."""
    if model.conditional and model.with_state:
        conditions = torch.tensor([list(c) for c, _ in selectors], dtype=torch.float32)  # (M, C)
        return torch.cat([conditions, state_rows([s for _, s in selectors], model.num_states)], dim=1)
    if any(isinstance(s, dict) for s in selectors):
        return state_rows(selectors, model.num_states)
    return torch.tensor(list(selectors))


def state_rows(states: Sequence[int | dict], num_states: int) -> Tensor:
    """(M, J) weights of the states: a one-hot row for an index, the weights of a ``{state: weight}`` mixture."""
    weights = torch.zeros(len(states), num_states)  # (M, J)
    for m, s in enumerate(states):
        for state, w in (s.items() if isinstance(s, dict) else [(s, 1.0)]):
            weights[m, int(state)] = w
    return weights


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the entries where ``mask`` is True (NaN padding excluded)."""
    return (pred.float() - target).pow(2)[mask].mean()
