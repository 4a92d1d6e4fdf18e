"""A tiny Vision Transformer for scikit-learn's 8x8 digits (18,058 parameters), shared by
make_checkpoints.py and evaluator.py (both load it by path, with nothing from rpgen).

2x2 patches (16 tokens of 4 pixels) + a class token, width 32, 2 pre-norm encoder layers with
4 heads and an MLP of 64, then a LayerNorm and a linear head on the class token.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

WIDTH, LAYERS, HEADS, MLP, PATCH = 32, 2, 4, 64, 2


class TinyViT(nn.Module):
    """(B, 64) pixels in [0, 1] (8x8, row-major) -> (B, 10) logits."""

    def __init__(self) -> None:
        super().__init__()
        tokens = (8 // PATCH) ** 2
        self.patch = nn.Linear(PATCH * PATCH, WIDTH)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, MLP, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        p = x.view(b, 8 // PATCH, PATCH, 8 // PATCH, PATCH).permute(0, 1, 3, 2, 4).reshape(b, -1, PATCH * PATCH)
        h = torch.cat([self.cls.expand(b, -1, -1), self.patch(p)], dim=1) + self.pos  # (B, 17, WIDTH)
        return self.head(self.norm(self.encoder(h)[:, 0]))  # (B, 10)


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed stratified 70/30 split of the digits: x_train, x_test (B, 64), y_train, y_test (B,)."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return x_train, x_test, y_train, y_test
