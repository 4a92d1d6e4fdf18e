"""What a method is: how it builds its model, what it trains, and how it samples parameters.

A method (``model.method`` in the config) turns a checkpoint set into a trained model and that
model into new parameter sets. :mod:`rpgen.training` and :mod:`rpgen.generation` drive any method
through this interface and never ask which one runs:

- :meth:`Method.build` makes the model whose ``state_dict`` is the run's weights file;
- :meth:`Method.stages` yields the optimisation stages (module, steps, learning rate, loss); the
  shared fit loop in :mod:`rpgen.training` runs each (AdamW, warm-up + cosine, clipping, logs);
- :meth:`Method.sample` yields the generated tensors of a group of models, in layout order.

Glossary: ``K`` checkpoints, ``L`` tokens per model, ``S`` token size, ``P`` generated values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rpgen.formats.checkpoints import LazyCheckpoint
from rpgen.config import Config
from rpgen.data.tokenizer import Layout, TensorInfo

Selector = Any  # a permutation-state index, a {state: weight} mixture, a condition vector (list of floats), or None


def states_beside_condition(config: Config, conditional: bool) -> bool:
    """True when a conditional model also takes a permutation state (``data.states = "run"``)."""
    return conditional and config.data.states == "run"


@dataclass
class TrainingSet:
    """What a method trains on: the checkpoints (opened lazily), their layout, and optional conditions."""

    checkpoints: Sequence[LazyCheckpoint]
    layout: Layout
    conditions: Tensor | None  # (K, C) condition vectors of a conditional run, else None
    config: Config
    device: torch.device
    num_processes: int = 1
    state_of: Tensor | None = None  # (K,) permutation state of each checkpoint; None: one per checkpoint

    @property
    def states_beside_condition(self) -> bool:
        return states_beside_condition(self.config, self.conditions is not None)

    @property
    def states(self) -> Tensor:
        """(K,) the permutation state of each checkpoint."""
        return torch.arange(len(self.checkpoints)) if self.state_of is None else self.state_of


@dataclass
class Stage:
    """One optimisation stage: ``module`` trained for ``steps`` AdamW steps at peak ``lr`` on ``loss``.

    ``loss(module)`` returns one step's loss; it is called with ``module`` as prepared for
    training (wrapped for distributed training where the method supports it). A ``resumable``
    stage saves a state every ``train.save_every`` steps and can be continued with --resume.
    """

    name: str
    title: str
    module: nn.Module
    steps: int
    lr: float
    loss: Callable[[nn.Module], Tensor]
    resumable: bool = False
    ema_decay: float = 0.0


class Method(ABC):
    """A way to learn a checkpoint set and sample new parameter sets from it."""

    name: ClassVar[str]
    weights_file: ClassVar[str] = "generator.safetensors"
    takes_selectors: ClassVar[bool] = True
    """Generation takes a permutation state (or a condition vector) per model."""
    takes_conditions: ClassVar[bool] = True
    """A checkpoint folder's conditions.json makes the model conditional."""
    distributed: ClassVar[bool] = True
    """Trains under several processes and can be resumed."""
    mixed_precision: ClassVar[bool] = True
    """Trains under bf16 autocast on CUDA (``train.mixed_precision = "auto"``); False: always in full
    precision (:mod:`rpgen.training.resolve`)."""

    @abstractmethod
    def build(self, config: Config, layout: Layout, *, num_states: int, cond_dim: int | None) -> nn.Module:
        """A freshly initialised model (the caller seeds the global RNG first)."""

    @abstractmethod
    def stages(self, model: nn.Module, data: TrainingSet, *, rng: torch.Generator) -> Iterator[Stage]:
        """The stages to train, in order; code after a ``yield`` runs once that stage is trained."""

    @abstractmethod
    def sample(self, model: nn.Module, layout: Layout, config: Config, selectors: Sequence[Selector], *,
               copied: dict[str, Tensor], scheduler: Any, rng: torch.Generator
               ) -> Iterator[tuple[int, TensorInfo, Tensor]]:
        """(model index in ``selectors``, tensor info, tensor) for every generated tensor of every
        model, each model's tensors in layout order."""

    def models_per_group(self, config: Config, layout: Layout) -> int:
        """How many models :meth:`sample` is given at once (bounds generation memory)."""
        return 1

    def training_memory(self, config: Config, layout: Layout, *, num_checkpoints: int, num_processes: int,
                        in_memory: bool) -> int | None:
        """Estimated peak training RAM in bytes for one process, or None when not estimated."""
        return None

    def generation_memory(self, config: Config, layout: Layout, *, num_states: int, models_at_once: int) -> int | None:
        """Estimated peak generation RAM in bytes, or None when not estimated."""
        return None
