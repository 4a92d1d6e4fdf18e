"""Make a folder of checkpoints the way you would for your own model.

Trains a small MLP with LayerNorm (64 -> 32 -> 10, 2,474 parameters) on scikit-learn's bundled
8x8 digits, flattened to 64 features, then keeps training and saves one plain safetensors
state_dict per epoch. Uses only torch, safetensors and scikit-learn: nothing from rpgen.

    python examples/own_checkpoints/make_checkpoints.py OUT_DIR [--num 30] [--seed 0]
    rpgen train OUT_DIR --out RUN_DIR
    rpgen evaluate RUN_DIR --generated GEN_DIR --evaluator examples/own_checkpoints/evaluator.py:evaluate
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F


class DigitsMLP(nn.Module):
    """(B, 64) pixels in [0, 1] -> (B, 10) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.norm = nn.LayerNorm(32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.norm(self.hidden(x))))  # (B, 10)


def load_train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The training part of a fixed stratified 70/30 split (evaluator.py uses the test part)."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64)
    y = torch.tensor(digits.target, dtype=torch.int64)  # (1797,)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return x_train, y_train


def make_checkpoints(out_dir: Path, *, num: int, seed: int) -> list[Path]:
    """Train from scratch, then save one checkpoint per epoch of low-learning-rate training."""
    torch.manual_seed(seed)
    x_train, y_train = load_train_split()
    model = DigitsMLP()

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # from scratch, minibatches of 128
        batch = torch.randint(len(x_train), (128,))
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    out_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    paths = []
    for epoch in range(num):
        for batch in torch.randperm(len(x_train)).split(128):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        path = out_dir / f"epoch_{epoch:03d}.safetensors"
        save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write epoch_000.safetensors, ... into")
    parser.add_argument("--num", type=int, default=30, help="number of checkpoints (epochs) to save")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.num < 2:
        parser.error("--num must be at least 2")
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir} is not empty; choose a new folder")
    torch.set_num_threads(1)  # a 2.5K-parameter MLP trains fastest on one thread, and reproducibly
    paths = make_checkpoints(args.out_dir, num=args.num, seed=args.seed)
    print(f"wrote {len(paths)} checkpoints to {args.out_dir}")


if __name__ == "__main__":
    main()
