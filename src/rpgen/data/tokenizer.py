"""State dict <-> tokens of parameters.

Pure functions over ``dict[str, Tensor]``; the only state is a :class:`Layout`, fitted once on
the checkpoint set and saved as JSON beside the generator.

Glossary: ``L`` tokens in a model, ``S`` values per token (``token_size``).

- Every floating-point tensor is generated; other tensors (``num_batches_tracked``...) and
  tensors with no elements (nothing to generate) are copied from a reference checkpoint.
- Each generated tensor is normalised with one scalar mean/std over the whole checkpoint set
  (float64). BatchNorm ``running_var`` is log-transformed first. With a per-element centre
  (``data.center``: "element", the mean of the checkpoints at each position, or "base", a base
  model's values) the centre is subtracted first and mean/std are those of what is left, the
  checkpoints' deviations: tokens then carry only what varies between checkpoints. The centres
  are tensors (:attr:`Layout.centers`), saved beside the generator, never in the JSON.
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
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal, Mapping

import torch
from torch import Tensor

from rpgen.errors import RpgenError
from rpgen.formats.dtypes import dtype_from_name, dtype_name

LOG_SUFFIXES = ("running_var",)
STD_FLOOR = 1e-8
Center = Literal["tensor", "element", "base"]


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
    center: Center = "tensor"
    centers: Mapping[str, Tensor] | None = field(default=None, compare=False, repr=False)
    """Per-element centre of each generated tensor (float32, its shape; in log space for
    ``running_var``) when ``center`` is not "tensor"."""

    def center_of(self, info: TensorInfo) -> Tensor | None:
        """(numel,) float64 centre of one generated tensor, or None (scalar centring only)."""
        return None if self.centers is None else self.centers[info.name].reshape(-1).double()

    def with_centers(self, centers: Mapping[str, Tensor]) -> Layout:
        """This layout with its centre tensors (read back from a run directory)."""
        want = {t.name: t.shape for t in self.generated}
        have = {k: tuple(v.shape) for k, v in centers.items()}
        if want != have:
            name = next(iter(sorted(set(want.items()) ^ set(have.items()))))[0]
            raise RpgenError(f"the centre tensors do not match the layout: tensor {name!r} is "
                             f"{have.get(name, 'missing')}, the layout expects {want.get(name, 'no such tensor')}")
        return Layout(self.token_size, self.tensors, self.center, dict(centers))

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
             **({} if self.center == "tensor" else {"center": self.center}),
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
        center = data.get("center", "tensor")
        if center not in ("tensor", "element", "base"):
            raise RpgenError(f"unknown centre {center!r} (expected 'element' or 'base')")
        return cls(token_size=int(data["token_size"]), tensors=tensors, center=center)


def _is_log(name: str) -> bool:
    return name.endswith(LOG_SUFFIXES)


def _to_normal_space(value: Tensor, info: TensorInfo) -> Tensor:
    x = value.detach().to("cpu", torch.float64).reshape(-1)
    return x.clamp_min(1e-30).log() if info.log else x


def _structure(state_dict: Mapping[str, Tensor]) -> list[TensorInfo]:
    """The tensors of the first checkpoint, before statistics."""
    infos = []
    for k, v in state_dict.items():
        generated = v.is_floating_point() and v.numel() > 0
        infos.append(TensorInfo(name=k, shape=tuple(v.shape), dtype=dtype_name(v.dtype), generated=generated,
                                log=generated and _is_log(k)))
    return infos


def fit_layout(state_dicts: Iterable[Mapping[str, Tensor]], *, token_size: int, center: Center = "tensor",
               base: Mapping[str, Tensor] | None = None) -> Layout:
    """Fit the layout on a checkpoint set: structure from the first, statistics over all.

    Statistics are accumulated in one streaming pass in float64, so ``state_dicts`` may be a lazy
    iterable of lazy mappings (e.g. :class:`rpgen.formats.checkpoints.LazyCheckpoint`): each tensor
    is read exactly once. ``center``: "tensor" (a scalar mean per tensor), "element" (the
    per-element mean of the set, and the mean/std of the deviations from it: one float64 sum per
    element is held while fitting) or "base" (the values of ``base``, a state dict of the same
    structure, and the mean/std of the deviations from them).
    """
    if token_size < 1:
        raise RpgenError(f"token_size must be >= 1, got {token_size}")
    if (center == "base") != (base is not None):
        raise RpgenError("a base model is needed exactly when data.center = 'base'")
    infos: list[TensorInfo] | None = None
    sums: dict[str, Tensor | float] = {}  # per element ("element") or per tensor
    sq_sums: dict[str, float] = {}
    count = 0
    for sd in state_dicts:
        if infos is None:  # structure from the first; each tensor is still read only once
            infos = _structure(sd)
            if base is not None:
                _check_base(base, infos)
        for info in infos:
            if not info.generated:
                continue
            x = _to_normal_space(sd[info.name], info)
            if center == "base":
                x = x - _to_normal_space(base[info.name], info)
            summed = x if center == "element" else float(x.sum())
            sums[info.name] = summed if count == 0 else sums[info.name] + summed
            sq_sums[info.name] = sq_sums.get(info.name, 0.0) + float((x * x).sum())
        count += 1
    if infos is None:
        raise RpgenError("cannot fit a tokenizer on zero checkpoints")
    if not any(info.generated for info in infos):
        raise RpgenError("the checkpoints hold no floating-point tensors to generate")
    fitted, centers = [], {}
    for info in infos:
        if info.generated:
            n = count * info.numel
            if center == "element":
                element_mean = sums[info.name] / count  # (numel,) float64
                centers[info.name] = element_mean.to(torch.float32).reshape(info.shape)
                mean = float((element_mean - centers[info.name].reshape(-1).double()).mean())
                var = sq_sums[info.name] / n - float((element_mean * element_mean).mean())
            else:
                mean = sums[info.name] / n
                var = sq_sums[info.name] / n - mean * mean
                if center == "base":
                    centers[info.name] = _to_normal_space(base[info.name], info).to(torch.float32).reshape(info.shape)
            info = TensorInfo(**{**asdict(info), "mean": mean, "std": max(math.sqrt(max(var, 0.0)), STD_FLOOR)})
        fitted.append(info)
    return Layout(token_size=token_size, tensors=tuple(fitted), center=center, centers=centers or None)


def _check_base(base: Mapping[str, Tensor], infos: list[TensorInfo]) -> None:
    """A base model must hold every generated tensor with the checkpoints' shape."""
    for info in infos:
        if not info.generated:
            continue
        if info.name not in base:
            raise RpgenError(f"the base model has no tensor {info.name!r}, which the checkpoints hold")
        shape = tuple(base[info.name].shape)
        if shape != info.shape:
            raise RpgenError(f"the base model's tensor {info.name!r} has shape {list(shape)}, the checkpoints' "
                             f"{list(info.shape)}")


def tokenize(state_dict: Mapping[str, Tensor], layout: Layout) -> Tensor:
    """State dict -> (L, S) float32 tokens, normalised, NaN in the padding."""
    s = layout.token_size
    tokens = torch.full((layout.num_tokens, s), float("nan"), dtype=torch.float32)
    for info, sl in layout.token_slices():
        x = standardize(state_dict[info.name], info, layout.center_of(info))
        tokens[sl].view(-1)[: info.numel] = x.to(torch.float32)
    return tokens


def standardize(values: Tensor, info: TensorInfo, center: Tensor | None = None) -> Tensor:
    """Raw values of (part of) one generated tensor -> (n,) float64 values in normalised weight space
    (``running_var`` in log space, minus the centre of those elements if any and the tensor's mean,
    over its std). ``center``: (n,) float64, the centre of the same elements."""
    x = _to_normal_space(values, info)
    if center is not None:
        x = x - center
    return (x - info.mean) / info.std


def flatten(state_dict: Mapping[str, Tensor], layout: Layout) -> Tensor:
    """State dict -> (P,) float32 vector of its generated values, normalised as in the tokens.

    The weight space in which rpgen measures distances: one unit is one (per-tensor) standard
    deviation of the checkpoint set; ``running_var`` is in log space.
    """
    parts = [standardize(state_dict[info.name], info, layout.center_of(info)).to(torch.float32)
             for info in layout.generated]
    return torch.cat(parts)


def unflatten(vector: Tensor, layout: Layout, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """(P,) vector from :func:`flatten` -> state dict; ``reference`` provides the copied tensors."""
    if tuple(vector.shape) != (layout.num_params,):
        raise RpgenError(f"expected a vector of {layout.num_params} values, got shape {tuple(vector.shape)}")
    out: dict[str, Tensor] = {}
    start = 0
    for info in layout.tensors:
        if info.generated:
            out[info.name] = detokenize_tensor(vector[start:start + info.numel], info, layout.center_of(info))
            start += info.numel
        else:
            out[info.name] = reference[info.name].clone()
    return out


def values_to_tokens(values: Tensor, info: TensorInfo, token_size: int, center: Tensor | None = None) -> Tensor:
    """Raw values of (part of) one tensor, whole tokens of it -> (n, S) tokens as :func:`tokenize` makes them.

    ``values`` holds elements ``j * S : min((j + n) * S, numel)`` of the flattened tensor (and
    ``center`` the centre of those elements); the result is bit-identical to rows ``j : j + n`` of
    that tensor in :func:`tokenize`.
    """
    n = math.ceil(values.numel() / token_size)
    tokens = torch.full((n, token_size), float("nan"), dtype=torch.float32)
    tokens.view(-1)[: values.numel()] = standardize(values, info, center).to(torch.float32)
    return tokens


def detokenize_tensor(tokens: Tensor, info: TensorInfo, center: Tensor | None = None) -> Tensor:
    """(n, S) tokens of one tensor -> that tensor in its dtype and shape (``center``: its (numel,)
    float64 centre, when the layout has one)."""
    x = tokens.reshape(-1)[: info.numel].to("cpu", torch.float64) * info.std + info.mean
    if center is not None:
        x = x + center
    if info.log:
        x = x.exp()
    return x.to(dtype_from_name(info.dtype)).reshape(info.shape)


def copied_tensors(state_dict: Mapping[str, Tensor], layout: Layout) -> dict[str, Tensor]:
    """The tensors that are copied, not generated (saved beside the generator)."""
    return {t.name: state_dict[t.name].detach().cpu().contiguous() for t in layout.tensors if not t.generated}


class TensorAssembler:
    """Collects one model's tokens in order; returns each generated tensor once its tokens are in."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
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
            done.append((info, detokenize_tensor(pending[:n], info, self._layout.center_of(info))))
            self._pending = [pending[n:]] if pending.shape[0] > n else []
            self._have -= n
        return done
