"""A benchmark fixture: a zoo of large plain-torch models for measuring memory and time (not accuracy).

``WideMLP(params)`` is a stack of ``nn.Linear(width, width)`` layers with a LayerNorm, sized to
about ``params`` parameters. :func:`collect_wide_mlp` writes a random initialisation and
``num_checkpoints`` lightly perturbed copies of it (``w + noise * std(w) * N(0, 1)``), one file at
a time, so building a 20 GB zoo needs about two models' worth of RAM. All randomness comes from
local ``torch.Generator``s seeded from ``seed``: the caller's global RNG is neither read nor changed.
Used by ``bench/scale.py`` and ``bench/gpu_check.py`` (``from wide_mlp import ...``: scripts run
as ``python bench/NAME.py`` import this folder).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from rpgen.errors import RpgenError
from rpgen.safety.atomic import atomic_dir

DEPTH = 4


def width_for(params: int, *, depth: int = DEPTH) -> int:
    """Width w with depth * (w * w + w) + 2 w closest to ``params``."""
    return max(4, round((-1 + math.sqrt(1 + 4 * params / depth)) / 2))


class WideMLP(nn.Module):
    """``depth`` Linear(w, w) layers, ReLU between them, a LayerNorm before the last; w from ``width_for``."""

    def __init__(self, params: int, *, depth: int = DEPTH, device: torch.device | str | None = None) -> None:
        super().__init__()
        width = width_for(params, depth=depth)
        self.layers = nn.ModuleList(nn.Linear(width, width, device=device) for _ in range(depth))
        self.norm = nn.LayerNorm(width, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, w) -> (b, w)"""
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](self.norm(x))


def random_init(params: int, *, seed: int, depth: int = DEPTH) -> dict[str, torch.Tensor]:
    """A WideMLP state_dict with torch's default initialisation, drawn from a generator seeded with ``seed``."""
    model = WideMLP(params, depth=depth, device="meta").to_empty(device="cpu")  # no draws from the global RNG
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:  # what nn.Linear.reset_parameters does, with our generator
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        model.norm.reset_parameters()  # ones and zeros
    return {k: v.detach() for k, v in model.state_dict().items()}


def collect_wide_mlp(out: str | Path, *, params: int, num_checkpoints: int, seed: int = 0, noise: float = 0.01,
                     overwrite: bool = False) -> list[Path]:
    """Write ``num_checkpoints`` perturbed copies of one random WideMLP of about ``params`` parameters."""
    if num_checkpoints < 1 or params < 1:
        raise RpgenError(f"need params >= 1 and num_checkpoints >= 1, got {params} and {num_checkpoints}")
    base = random_init(params, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i in range(num_checkpoints):
            sd = {}
            for k, v in base.items():
                scale = noise * (float(v.std()) if v.numel() > 1 and float(v.std()) > 0 else 1.0)
                sd[k] = v + scale * torch.randn(v.shape, generator=g)
            save_file(sd, str(tmp / f"{i:04d}.safetensors"))
            del sd
    return [out / f"{i:04d}.safetensors" for i in range(num_checkpoints)]
