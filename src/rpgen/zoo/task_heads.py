"""The tasks of the digits-tasks zoo and the models that answer them, trained many at once.

A task is a 10-bit code (character ``i`` is the bit of digit class ``i``): "is this digit one of
the classes whose bit is 1?". Its model is a :class:`TaskHead` on the frozen extractor's features
or, in a zoo of several modes, a :class:`TaskBlock` on its second-block maps. :func:`train_heads`
trains a chunk of tasks together as batched matmuls over ``(tasks, ...)`` weights (every head
from the same initialisation, on the same minibatches): a head depends only on its task and mode.
:mod:`rpgen.zoo.digits_tasks` builds the zoo from them.

Shapes: T = tasks, N = examples, F = features (32), H = hidden units (64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rpgen.errors import RpgenError
from rpgen.zoo.digits import BATCH_SIZE, PRETRAIN_LR, PRETRAIN_STEPS, DigitsCNN, load_split

NUM_CLASSES = 10
FEATURES = 32
HIDDEN = 64
HEAD_STEPS = 300  # Adam steps from the shared initialisation
HEAD_LR = 1e-2
FINETUNE_LR = 1e-3  # then one checkpoint per epoch at this rate
EXTRACTOR_EPOCHS = 10  # after the PRETRAIN_STEPS of the digits zoo, at FINETUNE_LR
MAP_CHANNELS = 16  # channels of the extractor's second block, what a TaskBlock reads
BLOCK_CHANNELS = 8
BLOCK_LR = 3e-2  # a TaskBlock's first HEAD_STEPS steps (then FINETUNE_LR)
MODE_SEED_STRIDE = 7919  # mode m's head initialisation is drawn with seed + 1 + m * this


def all_codes() -> list[str]:
    """The 1,022 task codes, ordered by ``int(b)`` with bit i = class i."""
    return [format(n, f"0{NUM_CLASSES}b")[::-1] for n in range(1, 2**NUM_CLASSES - 1)]


def check_code(code: str) -> str:
    """Return ``code`` if it is a valid task code, else raise naming it."""
    if len(code) != NUM_CLASSES or not set(code) <= {"0", "1"}:
        raise RpgenError(f"task code {code!r} must be {NUM_CLASSES} characters of 0/1 (character i = digit i)")
    if set(code) != {"0", "1"}:
        raise RpgenError(f"task code {code!r} has no positive or no negative class; it is not a task")
    return code


def code_bits(code: str) -> list[float]:
    return [float(c) for c in check_code(code)]


class TaskBlock(nn.Module):
    """conv(16 -> 8, 3x3) -> ReLU -> average pool -> Linear(8, 2) on the extractor's second-block
    maps: 1,178 parameters, the generated part of a multimodal zoo."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(MAP_CHANNELS, BLOCK_CHANNELS, 3, padding=1)
        self.fc = nn.Linear(BLOCK_CHANNELS, 2)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, 16, 4, 4) standardised maps -> (N, 2) logits (index 1 = "in the positive classes")."""
        return self.fc(F.relu(self.conv(maps)).mean(dim=(2, 3)))


class TaskHead(nn.Module):
    """Linear(32, 64) -> SiLU -> Linear(64, 2): 2,242 parameters, the generated part."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) standardised features -> (N, 2) logits (index 1 = "in the positive classes")."""
        return self.fc2(F.silu(self.fc1(features)))


def _frozen_extractor(extractor: dict[str, torch.Tensor]) -> DigitsCNN:
    """The zoo's extractor file (DigitsCNN weights + feature statistics) as a DigitsCNN in eval mode."""
    model = DigitsCNN()
    model.load_state_dict({k: v for k, v in extractor.items() if not k.startswith("features.")})
    return model.eval()


def extract_features(extractor: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 8, 8) images -> (N, F) standardised features of the frozen extractor."""
    model = _frozen_extractor(extractor)
    with torch.inference_mode():
        x = model.features(images)  # (N, F)
    return (x - extractor["features.mean"]) / extractor["features.std"]


def extract_maps(extractor: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 8, 8) images -> (N, 16, 4, 4) second-block maps of the frozen extractor, each channel
    standardised with its mean and std over the train split."""
    model = _frozen_extractor(extractor)

    def maps(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return F.relu(model.bn2(model.conv2(F.relu(model.bn1(model.conv1(x))))))

    train = maps(load_split()[0])  # (N_train, 16, 4, 4)
    mean, std = train.mean(dim=(0, 2, 3), keepdim=True), train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (maps(images) - mean) / std


def task_model(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A :class:`TaskBlock` or :class:`TaskHead` (by the state dict's keys) holding ``state_dict``."""
    model = TaskBlock() if is_block(state_dict) else TaskHead()
    model.load_state_dict(state_dict, strict=True)
    return model


def is_block(weights: dict[str, torch.Tensor]) -> bool:
    """True for the weights of a :class:`TaskBlock` (else a :class:`TaskHead`)."""
    return "conv.weight" in weights


def task_labels(codes: Sequence[str], digit_labels: torch.Tensor) -> torch.Tensor:
    """(T, N) binary labels: 1 where the digit's class has bit 1 in the task's code."""
    bits = torch.tensor([code_bits(c) for c in codes], dtype=torch.long)  # (T, 10)
    return bits[:, digit_labels]


def forward_many(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Many heads (or blocks) at once: weights stacked over T, x (N, F) features (or (N, 16, 4, 4)
    maps) -> (T, N, 2) logits."""
    if is_block(w):
        patches = F.unfold(x, 3, padding=1)  # (N, 16 * 9, 16 positions), the order of conv.weight's flattening
        kernel = w["conv.weight"].flatten(2)  # (T, C, 16 * 9)
        h = F.relu(torch.einsum("nkp,tck->tnpc", patches, kernel) + w["conv.bias"][:, None, None])  # (T, N, P, C)
        return torch.einsum("tnc,toc->tno", h.mean(2), w["fc.weight"]) + w["fc.bias"][:, None]  # (T, N, 2)
    h = torch.einsum("nf,thf->tnh", x, w["fc1.weight"]) + w["fc1.bias"][:, None]  # (T, N, H)
    return torch.einsum("tnh,tch->tnc", F.silu(h), w["fc2.weight"]) + w["fc2.bias"][:, None]  # (T, N, 2)


def pretrain_extractor(seed: int, x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, torch.Tensor]:
    """The digits CNN trained on the 10 classes, plus the mean/std of its features on the train split."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    steps = [torch.randint(len(x_train), (BATCH_SIZE,), generator=generator) for _ in range(PRETRAIN_STEPS)]
    for epoch in range(EXTRACTOR_EPOCHS):
        if epoch == 0:
            batches = steps
        else:
            if epoch == 1:
                optimizer = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
            batches = torch.randperm(len(x_train), generator=generator).split(BATCH_SIZE)
        for batch in batches:
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["features.mean"] = torch.zeros(FEATURES)
    state["features.std"] = torch.ones(FEATURES)
    raw = extract_features(state, x_train)
    state["features.mean"] = raw.mean(0)
    state["features.std"] = raw.std(0).clamp_min(1e-6)
    return state


def train_heads(codes: Sequence[str], features: torch.Tensor, digit_labels: torch.Tensor, *,
                 seed: int, num_checkpoints: int, mode: int = 0, block: bool = False
                 ) -> list[list[dict[str, torch.Tensor]]]:
    """Train one head (or, with ``block``, one :class:`TaskBlock` on ``features`` = maps) per code,
    all at once; return ``num_checkpoints`` state dicts per code.

    Every head starts from the same initialisation (that of ``mode``) and sees the same
    minibatches, so a head depends only on its own task and mode, not on which other tasks share
    its chunk.
    """
    t = len(codes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1 + MODE_SEED_STRIDE * mode)
        init = (TaskBlock() if block else TaskHead()).state_dict()
    weights = {k: v.unsqueeze(0).repeat(t, *[1] * v.dim()).requires_grad_() for k, v in init.items()}
    labels = task_labels(codes, digit_labels)  # (T, N)
    generator = torch.Generator().manual_seed(seed + 2)

    def step(optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> None:
        logits = forward_many(weights, features[batch])  # (T, B, 2)
        loss = F.cross_entropy(logits.reshape(-1, 2), labels[:, batch].reshape(-1), reduction="none")
        loss = loss.reshape(t, -1).mean(1).sum()  # sum over tasks: each head gets its own gradient
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    optimizer = torch.optim.Adam(weights.values(), lr=BLOCK_LR if block else HEAD_LR)
    for _ in range(HEAD_STEPS):
        step(optimizer, torch.randint(len(features), (BATCH_SIZE,), generator=generator))
    optimizer = torch.optim.Adam(weights.values(), lr=FINETUNE_LR)
    saved: list[list[dict[str, torch.Tensor]]] = [[] for _ in codes]
    for _ in range(num_checkpoints):
        for batch in torch.randperm(len(features), generator=generator).split(BATCH_SIZE):
            step(optimizer, batch)
        for i in range(t):
            saved[i].append({k: v[i].detach().clone() for k, v in weights.items()})
    return saved
