"""Where training reads its tokens: all in RAM for small checkpoint sets, read on demand for large ones.

Glossary: ``K`` checkpoints, ``B`` checkpoints in a batch, ``L`` tokens per model, ``S`` token
size, ``N`` tokens in a denoiser batch.

A training step runs the backbone over whole sequences, but the prototypes depend only on the
positions and the permutation state, not on token values; only the ``N`` tokens sent through the
denoiser need values. :class:`LazyTokens` reads just those from the checkpoint files, so RAM does
not grow with ``K`` or the model size. :class:`InMemoryTokens` holds the ``(K, L, S)`` stack.
Both return bit-identical tokens, so a run does not depend on which one it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from rpgen.formats.checkpoints import LazyCheckpoint
from rpgen.data.tokenizer import Layout, values_to_tokens, tokenize


class TokenSource(Protocol):
    def gather(self, states: Tensor, rows: Tensor) -> Tensor:
        """states: (B,) checkpoint indices; rows: (N,) indices into the batch's B * L tokens -> (N, S)."""
        ...


class InMemoryTokens:
    """All tokens of all checkpoints in one (K, L, S) float32 tensor."""

    def __init__(self, checkpoints: Sequence[LazyCheckpoint], layout: Layout) -> None:
        self.data = torch.stack([tokenize(ckpt, layout) for ckpt in checkpoints])  # (K, L, S)
        self.num_tokens = layout.num_tokens

    def gather(self, states: Tensor, rows: Tensor) -> Tensor:
        states, rows = states.cpu(), rows.cpu()
        return self.data[states[rows // self.num_tokens], rows % self.num_tokens]  # (N, S)


class LazyTokens:
    """Tokens read from the checkpoint files when a step needs them (one read per token)."""

    def __init__(self, checkpoints: Sequence[LazyCheckpoint], layout: Layout) -> None:
        self.checkpoints = list(checkpoints)
        self.layout = layout
        self.num_tokens = layout.num_tokens
        owner, first = [], []
        for i, (info, sl) in enumerate(layout.token_slices()):
            owner += [i] * (sl.stop - sl.start)
            first += [sl.start] * (sl.stop - sl.start)
        self._owner = torch.tensor(owner, dtype=torch.long)  # (L,) generated-tensor index of each token
        self._first = torch.tensor(first, dtype=torch.long)  # (L,) that tensor's first token
        self._infos = layout.generated

    def gather(self, states: Tensor, rows: Tensor) -> Tensor:
        states, rows = states.cpu(), rows.cpu()
        s = self.layout.token_size
        out = torch.empty(rows.numel(), s, dtype=torch.float32)  # (N, S)
        for i, (k, j) in enumerate(zip(states[rows // self.num_tokens].tolist(), (rows % self.num_tokens).tolist())):
            info = self._infos[int(self._owner[j])]
            start = (j - int(self._first[j])) * s
            stop = min(start + s, info.numel)
            values = self.checkpoints[k].read_flat(info.name, start, stop)
            center = None if self.layout.centers is None else self.layout.centers[info.name].reshape(-1)[start:stop]
            out[i] = values_to_tokens(values, info, s, None if center is None else center.double())[0]
        return out


def tokens_fit_in_memory(num_checkpoints: int, layout: Layout, *, in_memory_limit_mb: int) -> bool:
    """Whether the (K, L, S) float32 stack of every checkpoint's tokens fits in ``in_memory_limit_mb``."""
    return num_checkpoints * layout.num_tokens * layout.token_size * 4 <= in_memory_limit_mb * 2**20


def token_source(checkpoints: Sequence[LazyCheckpoint], layout: Layout, *, in_memory_limit_mb: int) -> TokenSource:
    """:class:`InMemoryTokens` when the (K, L, S) stack fits in ``in_memory_limit_mb``, else :class:`LazyTokens`."""
    if tokens_fit_in_memory(len(checkpoints), layout, in_memory_limit_mb=in_memory_limit_mb):
        return InMemoryTokens(checkpoints, layout)
    return LazyTokens(checkpoints, layout)
