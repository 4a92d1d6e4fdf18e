"""The diverse benchmark's zoo that no built-in zoo covers: a LayerNorm + GELU MLP on the 8x8 digits.

    model factory  bench/diverse_mlp.py:DigitsMLP   (``rpgen train --align weight-matching --model ...``)
    evaluator      bench/diverse_mlp.py:evaluate    (``rpgen evaluate --evaluator ...``)

The pixels are flattened (64 values) and go through two hidden layers of width 48, each followed
by LayerNorm and GELU: 6,154 parameters, about the digits CNN's size, without BatchNorm statistics.
:func:`collect_mlp` trains it like ``rpgen.zoo.digits.collect_digits``: Adam from scratch on random
minibatches, then one checkpoint per epoch at a small learning rate, ``runs`` independent runs
(seeds ``seed``, ``seed + 1``, ...) named ``rNN_EEEE.safetensors``; same data split, one thread.

Shapes: B = batch, 64 = flattened 8x8 pixels, H = hidden width (48), 10 = classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rpgen.formats.checkpoints import save_state_dict
from rpgen.safety.atomic import atomic_dir
from rpgen.zoo.digits import BATCH_SIZE, FINETUNE_LR, PRETRAIN_LR, PRETRAIN_STEPS, load_split, torch_threads

NAME = "digits-mlp"
HIDDEN = 48


class DigitsMLP(nn.Module):
    """64 -> 48 -> LayerNorm -> GELU -> 48 -> LayerNorm -> GELU -> 10 (6,154 parameters)."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) pixels in [0, 1] -> (B, 10) logits."""
        x = x.flatten(1)  # (B, 64)
        x = F.gelu(self.norm1(self.fc1(x)))  # (B, H)
        x = F.gelu(self.norm2(self.fc2(x)))  # (B, H)
        return self.out(x)  # (B, 10)


def collect_mlp(out_dir: str | Path, *, num_checkpoints: int = 50, runs: int = 10, seed: int = 0,
                overwrite: bool = False) -> list[Path]:
    """Train ``runs`` DigitsMLPs and save ``num_checkpoints / runs`` epoch checkpoints of each as
    ``out_dir/rNN_EEEE.safetensors``; the folder appears complete or not at all."""
    if runs < 1 or num_checkpoints % runs:
        raise ValueError(f"runs must be >= 1 and divide num_checkpoints ({num_checkpoints}), got {runs}")
    out_dir, names = Path(out_dir), []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, torch_threads(1):
        for run in range(runs):
            run_names = [f"r{run:02d}_{i:04d}.safetensors" for i in range(num_checkpoints // runs)]
            _train_and_save(tmp, run_names, seed=seed + run)
            names += run_names
    return [out_dir / name for name in names]


def _train_and_save(folder: Path, names: list[str], *, seed: int) -> None:
    """One run: PRETRAIN_STEPS Adam steps from scratch, then one checkpoint per epoch at FINETUNE_LR."""
    x_train, y_train, _, _ = load_split()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DigitsMLP()
    model.train()

    def step(optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    for _ in range(PRETRAIN_STEPS):
        step(optimizer, torch.randint(len(x_train), (BATCH_SIZE,), generator=generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
    for name in names:
        for batch in torch.randperm(len(x_train), generator=generator).split(BATCH_SIZE):
            step(optimizer, batch)
        save_state_dict(model.state_dict(), folder / name, metadata={"zoo": NAME, "seed": str(seed)})


def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float | list[bool]]:
    """Test accuracy (percent) of a DigitsMLP state_dict on the digits test split, and ``per_example``:
    for each of the 540 test images, whether it was classified correctly."""
    device = next(iter(state_dict.values())).device
    model = DigitsMLP().to(device)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    _, _, x_test, y_test = load_split(device=device)
    with torch.inference_mode():
        correct = model(x_test).argmax(dim=1) == y_test  # (540,)
    return {"accuracy": 100.0 * int(correct.sum()) / len(y_test), "per_example": correct.tolist()}
