"""Baselines: models anyone could make without a generator, measured beside the generated ones.

In every ``rpgen evaluate`` (weight vectors, normalised as in :mod:`rpgen.evaluation.memorization`):
a checkpoint plus Gaussian noise (noise std = ``scale`` x each tensor's std; ``noise_matched`` at
the generated models' distance), the average of all checkpoints, the midpoint of two
checkpoints, and the two baselines arXiv 2506.07998 measures every weight generator against: the
average of a random subset of 16 checkpoints and a Gaussian fitted to each coordinate of the
checkpoints (:func:`baselines`). A generator that learnt only the checkpoints' mean and spread
scores like these. For conditional zoos, on state dicts: :class:`LinearMap`, least
squares from a condition's monomials to the weights (the regressor a conditional generator must
beat), and :func:`average` of state dicts (the mean of modes, or the midpoint of two).
``rpgen generate --mix 0.5`` is the same midpoint inside the generator, between two states.

Glossary: ``K`` training checkpoints, ``P`` values per model, ``F`` monomials of a condition.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

NOISE_SCALES = (0.001, 0.01, 0.03, 0.1, 1.0)
MAX_BASELINE_MODELS = 50  # per baseline kind
SUBSET = 16  # checkpoints per averaged subset (arXiv 2506.07998)
FIELD_MODELS = 10  # models of each of the two field baselines


def baseline_label(name: str) -> str:
    """A human label for a baseline name."""
    if name == "noise_matched":
        return "checkpoint + noise at the generated models' distance"
    if name.startswith("noise_"):
        return f"checkpoint + noise {name.removeprefix('noise_')} std"
    return {"average": "average of all checkpoints", "interpolation": "midpoint of two checkpoints",
            f"averaged_{SUBSET}": f"average of {SUBSET} random checkpoints",
            "gaussian": "Gaussian fitted to each coordinate of the checkpoints"}.get(name, name)


def baselines(checkpoints: Tensor, *, seed: int = 0, scales: tuple[float, ...] = NOISE_SCALES,
              matched_distance: float | None = None, max_models: int = MAX_BASELINE_MODELS) -> dict[str, Tensor]:
    """Baseline weight vectors: ``{name: (n, P)}``, in report order: ``noise_{scale}`` per scale,
    ``noise_matched``, ``average``, ``interpolation``, ``averaged_16`` (more than 16 checkpoints:
    else it is the average), ``gaussian``.

    checkpoints: (K, P). Noise is added to up to ``max_models`` checkpoints (evenly spaced);
    ``noise_matched`` (when ``matched_distance`` is given) uses the noise scale that puts a model
    that distance from its checkpoint, to compare with generated models at the same distance.
    Interpolation takes the midpoints of ``min(K, max_models)`` random distinct pairs;
    ``averaged_16`` the means of :data:`FIELD_MODELS` random subsets of 16; ``gaussian`` draws
    :data:`FIELD_MODELS` models from each coordinate's mean and standard deviation.
    """
    k, p = checkpoints.shape
    rng = torch.Generator().manual_seed(seed)
    picked = torch.linspace(0, k - 1, min(k, max_models)).round().long()  # (n,)
    named_scales = [(f"noise_{scale:g}", scale) for scale in scales]
    if matched_distance is not None:
        named_scales.append(("noise_matched", matched_distance / p ** 0.5))  # E|noise| = scale * sqrt(P)
    out: dict[str, Tensor] = {}
    for name, scale in named_scales:
        noise = torch.randn((len(picked), p), generator=rng)
        out[name] = checkpoints[picked] + scale * noise
    out["average"] = checkpoints.mean(dim=0, keepdim=True)
    pairs = torch.stack([torch.randperm(k, generator=rng)[:2] for _ in range(min(k, max_models))])  # (n, 2)
    out["interpolation"] = 0.5 * (checkpoints[pairs[:, 0]] + checkpoints[pairs[:, 1]])
    n = min(FIELD_MODELS, max_models)
    if k > SUBSET:
        subsets = torch.stack([torch.randperm(k, generator=rng)[:SUBSET] for _ in range(n)])  # (n, 16)
        out[f"averaged_{SUBSET}"] = checkpoints[subsets].mean(dim=1)
    if k > 1:
        mean, std = checkpoints.mean(dim=0), checkpoints.std(dim=0)  # (P,) each
        out["gaussian"] = mean + std * torch.randn((n, p), generator=rng)
    return out


def average(state_dicts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of state dicts, tensor by tensor: the midpoint of two, the mean of a task's modes."""
    return {k: sum(s[k] for s in state_dicts) / len(state_dicts) for k in state_dicts[0]}


class LinearMap:
    """Least squares from a condition's monomials (its values, their products of up to ``degree``
    values, and 1) to the weights: fitted on (condition, state dict) examples, e.g. every training
    checkpoint of a conditional zoo; degree 1 is a linear map.

    Tensors are flattened in the key order of the first example's state dict."""

    def __init__(self, examples: Iterable[tuple[Sequence[float], Mapping[str, Tensor]]], degree: int = 1) -> None:
        self.degree = degree
        x, y = [], []
        for condition, state in examples:
            x.append(self.features(condition))
            y.append(torch.cat([state[k].reshape(-1) for k in state]))
        self.shapes = {k: v.shape for k, v in state.items()}
        self.weights = torch.linalg.lstsq(torch.tensor(x, dtype=torch.float64),
                                          torch.stack(y).double()).solution  # (F, P)

    def features(self, condition: Sequence[float]) -> list[float]:
        """(F,) the monomials of ``condition``: its values, their products of 2 .. ``degree`` values, 1."""
        values = [float(v) for v in condition]
        products = [float(math.prod(values[i] for i in chosen)) for d in range(2, self.degree + 1)
                    for chosen in itertools.combinations(range(len(values)), d)]
        return values + products + [1.0]

    def model(self, condition: Sequence[float]) -> dict[str, Tensor]:
        """The state dict the map gives ``condition`` (float32)."""
        values = torch.tensor(self.features(condition), dtype=torch.float64) @ self.weights  # (P,)
        out, start = {}, 0
        for key, shape in self.shapes.items():
            out[key] = values[start:start + shape.numel()].reshape(shape).float()
            start += shape.numel()
        return out
