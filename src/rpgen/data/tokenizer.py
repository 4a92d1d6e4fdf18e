"""State dict <-> tokens of parameters.

Pure functions over ``dict[str, Tensor]``; the only state is a :class:`Layout`, fitted once on
the checkpoint set and saved as JSON beside the generator.

Glossary: ``L`` tokens in a model, ``S`` values per token (``token_size``).

- Every floating-point tensor is generated; other tensors (``num_batches_tracked``...) and
  tensors with no elements (nothing to generate) are copied from a reference checkpoint.
- Each generated tensor is normalised with one scalar mean/std over the whole checkpoint set
  (float64). BatchNorm ``running_var`` is log-transformed first.
- A tensor is flattened and cut into tokens of ``S`` values; tokens never cross tensors; the
  last token of a tensor is padded with NaN. A token's position is
  ``(tensor index, token index within the tensor)``.
- Back to weights: :func:`detokenize_tensor` for one tensor's tokens, :class:`TensorAssembler` for
  a model's tokens as they come (what generation streams), :func:`flatten` / :func:`unflatten` for
  the normalised weight vector evaluation measures distances in.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor

from rpgen.errors import RpgenError
from rpgen.formats.dtypes import dtype_from_name, dtype_name

LOG_SUFFIXES = ("running_var",)
STD_FLOOR = 1e-8


@dataclass(frozen=True)
class TensorInfo:
    """How one tensor of the state dict is (or is not) turned into tokens."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch.", e.g. "float32"
    generated: bool
    log: bool = False
    mean: float = 0.0
    std: float = 1.0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def num_tokens(self, token_size: int) -> int:
        return math.ceil(self.numel / token_size) if self.generated else 0


@dataclass(frozen=True)
class Layout:
    """Token structure and normalisation statistics of one architecture."""

    token_size: int
    tensors: tuple[TensorInfo, ...]

    @property
    def generated(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.tensors if t.generated)

    @property
    def num_tokens(self) -> int:
        return sum(t.num_tokens(self.token_size) for t in self.tensors)

    @property
    def num_params(self) -> int:
        """Number of generated values (parameters and float buffers)."""
        return sum(t.numel for t in self.generated)

    def positions(self) -> Tensor:
        """(L, 2) long tensor: (index among generated tensors, token index within tensor)."""
        rows = [
            torch.stack([torch.full((n,), i), torch.arange(n)], dim=1)
            for i, info in enumerate(self.generated)
            for n in [info.num_tokens(self.token_size)]
        ]
        return torch.cat(rows).long()

    def token_slices(self) -> list[tuple[TensorInfo, slice]]:
        """For each generated tensor, the slice of the token sequence that holds it."""
        out, start = [], 0
        for info in self.generated:
            n = info.num_tokens(self.token_size)
            out.append((info, slice(start, start + n)))
            start += n
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"format": "rpgen-layout-1", "token_size": self.token_size,
             "tensors": [asdict(t) for t in self.tensors]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data = json.loads(text)
        if data.get("format") != "rpgen-layout-1":
            raise RpgenError(f"unknown tokenizer format {data.get('format')!r}")
        tensors = tuple(
            TensorInfo(**{**t, "shape": tuple(t["shape"])}) for t in data["tensors"]
        )
        return cls(token_size=int(data["token_size"]), tensors=tensors)


def _is_log(name: str) -> bool:
    return name.endswith(LOG_SUFFIXES)


def _to_normal_space(value: Tensor, info: TensorInfo) -> Tensor:
    x = value.detach().to("cpu", torch.float64).reshape(-1)
    return x.clamp_min(1e-30).log() if info.log else x


def _moments(value: Tensor, info: TensorInfo) -> tuple[float, float]:
    """Sum and sum of squares of a tensor in normal space (0, 0 for copied tensors)."""
    if not info.generated:
        return 0.0, 0.0
    x = _to_normal_space(value, info)
    return float(x.sum()), float((x * x).sum())


def fit_layout(state_dicts: Iterable[Mapping[str, Tensor]], *, token_size: int) -> Layout:
    """Fit the layout on a checkpoint set: structure from the first, statistics over all.

    Statistics are accumulated in one streaming pass (sum and sum of squares in float64), so
    ``state_dicts`` may be a lazy iterable of lazy mappings (e.g.
    :class:`rpgen.formats.checkpoints.LazyCheckpoint`): each tensor is read exactly once.
    """
    if token_size < 1:
        raise RpgenError(f"token_size must be >= 1, got {token_size}")
    infos: list[TensorInfo] | None = None
    sums: list[float] = []
    sq_sums: list[float] = []
    count = 0
    for sd in state_dicts:
        if infos is None:  # structure from the first; each tensor is still read only once
            infos, values = [], []
            for k, v in sd.items():
                generated = v.is_floating_point() and v.numel() > 0
                infos.append(TensorInfo(name=k, shape=tuple(v.shape), dtype=dtype_name(v.dtype),
                                        generated=generated, log=generated and _is_log(k)))
                values.append(_moments(v, infos[-1]))
            sums, sq_sums = [m[0] for m in values], [m[1] for m in values]
        else:
            for i, info in enumerate(infos):
                if info.generated:
                    s, sq = _moments(sd[info.name], info)
                    sums[i] += s
                    sq_sums[i] += sq
        count += 1
    if infos is None:
        raise RpgenError("cannot fit a tokenizer on zero checkpoints")
    if not any(info.generated for info in infos):
        raise RpgenError("the checkpoints hold no floating-point tensors to generate")
    fitted = []
    for info, s, sq in zip(infos, sums, sq_sums):
        if info.generated:
            n = count * info.numel
            mean = s / n
            var = max(sq / n - mean * mean, 0.0)
            info = TensorInfo(**{**asdict(info), "mean": mean, "std": max(math.sqrt(var), STD_FLOOR)})
        fitted.append(info)
    return Layout(token_size=token_size, tensors=tuple(fitted))


def tokenize(state_dict: Mapping[str, Tensor], layout: Layout) -> Tensor:
    """State dict -> (L, S) float32 tokens, normalised, NaN in the padding."""
    s = layout.token_size
    tokens = torch.full((layout.num_tokens, s), float("nan"), dtype=torch.float32)
    for info, sl in layout.token_slices():
        x = (_to_normal_space(state_dict[info.name], info) - info.mean) / info.std
        tokens[sl].view(-1)[: info.numel] = x.to(torch.float32)
    return tokens


def standardize(values: Tensor, info: TensorInfo) -> Tensor:
    """Raw values of (part of) one generated tensor -> (n,) float64 values in normalised weight space
    (``running_var`` in log space, minus the tensor's mean, over its std)."""
    return (_to_normal_space(values, info) - info.mean) / info.std


def flatten(state_dict: Mapping[str, Tensor], layout: Layout) -> Tensor:
    """State dict -> (P,) float32 vector of its generated values, normalised as in the tokens.

    The weight space in which rpgen measures distances: one unit is one (per-tensor) standard
    deviation of the checkpoint set; ``running_var`` is in log space.
    """
    parts = [standardize(state_dict[info.name], info).to(torch.float32) for info in layout.generated]
    return torch.cat(parts)


def unflatten(vector: Tensor, layout: Layout, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """(P,) vector from :func:`flatten` -> state dict; ``reference`` provides the copied tensors."""
    if tuple(vector.shape) != (layout.num_params,):
        raise RpgenError(f"expected a vector of {layout.num_params} values, got shape {tuple(vector.shape)}")
    out: dict[str, Tensor] = {}
    start = 0
    for info in layout.tensors:
        if info.generated:
            out[info.name] = detokenize_tensor(vector[start:start + info.numel], info)
            start += info.numel
        else:
            out[info.name] = reference[info.name].clone()
    return out


def values_to_tokens(values: Tensor, info: TensorInfo, token_size: int) -> Tensor:
    """Raw values of (part of) one tensor, whole tokens of it -> (n, S) tokens as :func:`tokenize` makes them.

    ``values`` holds elements ``j * S : min((j + n) * S, numel)`` of the flattened tensor; the
    result is bit-identical to rows ``j : j + n`` of that tensor in :func:`tokenize`.
    """
    n = math.ceil(values.numel() / token_size)
    tokens = torch.full((n, token_size), float("nan"), dtype=torch.float32)
    tokens.view(-1)[: values.numel()] = standardize(values, info).to(torch.float32)
    return tokens


def detokenize_tensor(tokens: Tensor, info: TensorInfo) -> Tensor:
    """(n, S) tokens of one tensor -> that tensor in its dtype and shape."""
    x = tokens.reshape(-1)[: info.numel].to("cpu", torch.float64) * info.std + info.mean
    if info.log:
        x = x.exp()
    return x.to(dtype_from_name(info.dtype)).reshape(info.shape)


def copied_tensors(state_dict: Mapping[str, Tensor], layout: Layout) -> dict[str, Tensor]:
    """The tensors that are copied, not generated (saved beside the generator)."""
    return {t.name: state_dict[t.name].detach().cpu().contiguous() for t in layout.tensors if not t.generated}


class TensorAssembler:
    """Collects one model's tokens in order; returns each generated tensor once its tokens are in."""

    def __init__(self, layout: Layout) -> None:
        self._todo = [(info, sl.stop - sl.start) for info, sl in layout.token_slices()]
        self._pending: list[Tensor] = []
        self._have = 0

    def add(self, tokens: Tensor) -> list[tuple[TensorInfo, Tensor]]:
        """tokens: (n, S), the next tokens of the sequence -> the tensors they complete."""
        self._pending.append(tokens)
        self._have += tokens.shape[0]
        done = []
        while self._todo and self._have >= self._todo[0][1]:
            info, n = self._todo.pop(0)
            pending = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
            done.append((info, detokenize_tensor(pending[:n], info)))
            self._pending = [pending[n:]] if pending.shape[0] > n else []
            self._have -= n
        return done
