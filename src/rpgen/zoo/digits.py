"""The default checkpoint zoo: a small BatchNorm CNN on scikit-learn's bundled 8x8 digits.

``collect_digits`` follows the paper's recipe: train from scratch, then keep training at a
small learning rate and save one checkpoint per epoch. ``evaluate`` is the matching
evaluator (spec ``rpgen.zoo.digits:evaluate``): test accuracy in percent.

Shapes: B = batch, C = channels, 8x8 = image height x width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rpgen.formats.checkpoints import save_state_dict
from rpgen.errors import RpgenError
from rpgen.safety.atomic import atomic_dir
from rpgen.display import progress_bar

NAME = "digits"

PRETRAIN_STEPS = 300  # Adam steps from scratch on random minibatches
PRETRAIN_LR = 1e-2
FINETUNE_LR = 1e-3  # then Adam at this rate, one checkpoint per epoch
BATCH_SIZE = 128


class DigitsCNN(nn.Module):
    """conv(1->8) -> conv(8->16, stride 2) -> conv(16->32) -> global average pool -> linear(32->10).

    Each conv is 3x3 without bias, followed by BatchNorm and ReLU: 6,274 parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) pixels in [0, 1] -> (B, 32) pooled features (what ``fc`` reads)."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 8, 8, 8)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 16, 4, 4)
        x = F.relu(self.bn3(self.conv3(x)))  # (B, 32, 4, 4)
        return x.mean(dim=(2, 3))  # (B, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8, 8) pixels in [0, 1] -> (B, 10) logits."""
        return self.fc(self.features(x))  # (B, 10)


@lru_cache(maxsize=1)
def _split_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified 70/30 split of the 1,797 digits (random_state=0), as numpy arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)  # (N,)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.3, stratify=labels, random_state=0
    )
    return x_train, y_train, x_test, y_test


def load_split(
    *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh tensors ``x_train (1257, 1, 8, 8), y_train (1257,), x_test (540, 1, 8, 8), y_test (540,)``."""
    return tuple(torch.tensor(a, device=device) for a in _split_arrays())  # type: ignore[return-value]


def collect_digits(
    out_dir: str | Path,
    *,
    num_checkpoints: int = 50,
    seed: int = 0,
    runs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train DigitsCNNs and save one checkpoint per epoch as ``out_dir/0000.safetensors`` ...

    With ``runs`` > 1, ``num_checkpoints`` are split evenly over that many independent training
    runs (seeds ``seed``, ``seed + 1``, ...), named ``rRR_NNNN.safetensors``: a diverse zoo whose
    checkpoints sit in different permutation states. Refuses an existing ``out_dir`` unless
    ``overwrite``; the folder appears complete or not at all. Trains on one CPU thread: the files
    are then the same for a seed whatever the core count.
    """
    if num_checkpoints < 2:
        raise RpgenError(f"num_checkpoints must be at least 2 (a zoo needs 2+), got {num_checkpoints}")
    if runs < 1 or num_checkpoints % runs:
        raise RpgenError(f"runs must be >= 1 and divide num_checkpoints ({num_checkpoints}), got {runs}")
    out_dir = Path(out_dir)
    per_run = num_checkpoints // runs
    names = []
    with (
        atomic_dir(out_dir, overwrite=overwrite) as tmp,
        progress_bar(enabled=progress, show_loss=False) as bar,
        torch_threads(1),
    ):
        task = bar.add_task("digits: training", total=runs * (PRETRAIN_STEPS + per_run))
        for run in range(runs):
            run_names = [f"{i:04d}.safetensors" if runs == 1 else f"r{run:02d}_{i:04d}.safetensors"
                         for i in range(per_run)]
            _train_and_save(tmp, run_names, seed=seed + run, advance=lambda: bar.advance(task))
            names += run_names
    return [out_dir / name for name in names]


def _train_and_save(folder: Path, names: list[str], *, seed: int, advance: Callable[[], None]) -> None:
    """One training run: pre-train from scratch, then save one checkpoint per epoch as ``names``."""
    x_train, y_train, _, _ = load_split()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DigitsCNN()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    for _ in range(PRETRAIN_STEPS):
        batch = torch.randint(len(x_train), (BATCH_SIZE,), generator=generator)
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        advance()

    optimizer = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
    for name in names:
        order = torch.randperm(len(x_train), generator=generator)
        for batch in order.split(BATCH_SIZE):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        save_state_dict(model.state_dict(), folder / name, metadata={"zoo": NAME, "seed": str(seed)})
        advance()


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run a block with ``num_threads`` intra-op threads, then restore the previous setting.

    A 6K-parameter CNN gains nothing from intra-op threads; one thread makes results independent
    of the core count and avoids 10x+ slowdowns when the cores are shared with other work.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float | list[bool]]:
    """Test accuracy (percent) of a DigitsCNN state_dict on the fixed test split.

    Also returns ``per_example``: for each of the 540 test images, whether it was classified
    correctly (what rpgen's behavioural-similarity measure compares).
    """
    device = next(iter(state_dict.values())).device
    model = DigitsCNN().to(device)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    _, _, x_test, y_test = load_split(device=device)
    with torch.inference_mode():
        predicted = model(x_test).argmax(dim=1)  # (540,)
    correct = predicted == y_test  # (540,)
    return {"accuracy": 100.0 * int(correct.sum()) / len(y_test), "per_example": correct.tolist()}
