"""Small models for the alignment tests (imported by the tests in this folder): a residual MLP,
a conv + flatten MLP, an embedding model, and two that mix hidden units (refused)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rpgen.zoo.digits import DigitsCNN


class ResidualMLP(nn.Module):
    """Linear in, two ``x + relu(fc(ln(x)))`` blocks, LayerNorm, a GELU MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.ln = nn.ModuleList(nn.LayerNorm(8) for _ in range(2))
        self.fc = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.norm = nn.LayerNorm(8)
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # (B, 8)
        for ln, fc in zip(self.ln, self.fc):
            h = h + F.relu(fc(ln(h)))  # (B, 8)
        return self.out(F.gelu(self.hidden(self.norm(h))))  # (B, 3)


class ConvFlattenMLP(nn.Module):
    """conv(1->4) on 6x6 -> ReLU -> flatten (4 x 16) -> Linear(64, 16) -> ReLU -> dropout -> Linear(16, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(64, 16)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(F.relu(self.conv(x)), 1)  # (B, 4 * 4 * 4)
        return self.fc2(self.drop(F.relu(self.fc1(h))))  # (B, 5)


class EmbeddingModel(nn.Module):
    """Embedding(20, 8) -> Linear(8, 12) -> tanh -> mean over the sequence -> Linear(12, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(self.embed(tokens)))  # (B, L, 12)
        return self.head(h.mean(dim=1))  # (B, 4)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, 8)
        return torch.matmul(self.q(x), self.k(x).transpose(1, 2))  # (B, L, L)


class TorchAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.attn(h, h, h)[0]


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Generator], torch.Tensor]]] = {
    "digits": (DigitsCNN, lambda g: torch.rand(4, 1, 8, 8, generator=g)),
    "residual": (ResidualMLP, lambda g: torch.randn(5, 6, generator=g)),
    "conv-flatten": (ConvFlattenMLP, lambda g: torch.randn(3, 1, 6, 6, generator=g)),
    "embedding": (EmbeddingModel, lambda g: torch.randint(20, (3, 5), generator=g)),
}


def random_model(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model of ``MODELS[name]`` with random weights and BatchNorm statistics, in eval mode, and an input."""
    factory, make_input = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    model = factory().eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=g))
                if key.endswith("running_var"):
                    tensor.abs_().add_(0.5)
    return model, make_input(g)


def random_perms(spec, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(size, generator=g) for name, size in spec.groups.items()}


def run(factory: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    model = factory().eval()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return model(x)
