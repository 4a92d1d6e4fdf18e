"""A finished run, loaded for sampling: :func:`load_run` -> :class:`Run`.

The run directory's files are read through :class:`rpgen.run_dir.RunDir`; the trained model is
built by the run's method and loaded on a device. :meth:`Run.sample` returns new state dicts in
memory; :func:`rpgen.generation.generate` streams the same models to files. Both step through
:meth:`Run.groups` and :meth:`Run.tensors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rpgen.config import Config, Sampler
from rpgen.data.tokenizer import Layout, TensorInfo
from rpgen.errors import RpgenError, first_line
from rpgen.formats.checkpoints import check_finite
from rpgen.formats.safetensors_io import read_tensors
from rpgen.generation.selection import draw_states, requested
from rpgen.methods import Method, get_method
from rpgen.methods.base import Selector, states_beside_condition
from rpgen.methods.diffusion import auto_temperature, check_sampling, make_scheduler
from rpgen.models.backbones import mamba_ssm_available
from rpgen.run_dir import COPIED, RUN_INFO, TOKENIZER, RunDir


@dataclass
class Run:
    """A finished run, loaded for sampling: its config, layout, copied tensors and trained model."""

    path: Path
    config: Config
    layout: Layout
    copied: dict[str, torch.Tensor]
    model: torch.nn.Module
    info: dict
    method: Method

    @property
    def num_states(self) -> int:
        """Permutation states the model knows (one per training checkpoint, or per training run)."""
        return int(self.info.get("num_states", self.info["num_checkpoints"]))

    @property
    def condition_dim(self) -> int | None:
        """Length of the condition vectors of a conditional run; None for an unconditional one."""
        dim = self.info.get("condition_dim")
        return None if dim is None else int(dim)

    @property
    def states_beside_condition(self) -> bool:
        """True for a conditional run that also takes a permutation state per model (``data.states = "run"``)."""
        return states_beside_condition(self.config, self.condition_dim is not None)

    @property
    def binary_conditions(self) -> bool:
        """True when the run was trained on 0/1 conditions only."""
        return bool(self.info.get("binary_conditions", False))

    def sampling(self, sampler: Sampler | None, steps: int | None, temperature: float | None
                 ) -> tuple[Sampler, int, float]:
        """The sampler, steps and temperature asked for, each None taken from the run's ``[sample]``;
        checked (one-line errors) before anything is sampled."""
        sampler = sampler or self.config.sample.sampler
        steps = self.config.sample.steps if steps is None else steps
        temperature = self.config.sample.temperature if temperature is None else temperature
        if temperature == "auto":  # a config.toml edited by hand; training writes the number
            temperature = auto_temperature(self.condition_dim is not None)
        check_sampling(self.config.diffusion, sampler, steps, temperature)
        return sampler, steps, temperature

    def groups(self, selectors: Sequence[Selector]) -> Iterator[tuple[int, Sequence[Selector]]]:
        """(index of the first, selectors) of each group of models sampled together (bounds memory)."""
        size = self.method.models_per_group(self.config, self.layout)
        for first in range(0, len(selectors), size):
            yield first, selectors[first:first + size]

    def tensors(self, group: Sequence[Selector], *, scheduler: Any, rng: torch.Generator
                ) -> Iterator[tuple[int, TensorInfo, torch.Tensor]]:
        """(model index in ``group``, tensor info, tensor) of every generated tensor of a group."""
        return self.method.sample(self.model, self.layout, self.config, group, copied=self.copied,
                                  scheduler=scheduler, rng=rng)

    def sample_with(self, group: Sequence[Selector], *, scheduler: Any, rng: torch.Generator
                    ) -> list[dict[str, torch.Tensor]]:
        """Complete state dicts, one per selector of ``group``, sampled together with ``scheduler`` and ``rng``."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in group]
        for m, info, tensor in self.tensors(group, scheduler=scheduler, rng=rng):
            out[m][info.name] = tensor
        return [{t.name: d[t.name] if t.generated else self.copied[t.name].clone() for t in self.layout.tensors}
                for d in out]

    def sample(self, num: int = 1, *, seed: int = 0, states: Sequence[int] | None = None,
               conditions: Sequence[Sequence[float]] | None = None, sampler: Sampler | None = None,
               steps: int | None = None, mix: float | None = None,
               temperature: float | None = None) -> list[dict[str, torch.Tensor]]:
        """``num`` new state dicts (``num`` per condition for a conditional run), in memory.

        The same models :func:`rpgen.generation.generate` writes for the same arguments; for large
        models use that, which streams them to files. ``states``: the permutation state of each
        model (default: drawn with ``seed``).
        """
        if num < 1:
            raise RpgenError(f"num must be >= 1, got {num}")
        sampler, steps, temperature = self.sampling(sampler, steps, temperature)
        rng = torch.Generator().manual_seed(seed)
        selectors = draw_states(self, requested(self, num=num, states=states, conditions=conditions, mix=mix), rng=rng,
                                mix=mix)
        scheduler = make_scheduler(self.config.diffusion, sampler, steps, temperature)
        return [model for _, group in self.groups(selectors)
                for model in self.sample_with(group, scheduler=scheduler, rng=rng)]


def load_run(run_dir: str | Path, *, device: torch.device | str = "cpu") -> Run:
    """A finished run of any method, its model on ``device`` in eval mode.

    Every file is checked as it is read: one line naming the file, never a traceback or NaN models.
    """
    device = _usable(device)
    files = RunDir(run_dir)
    config = files.config()
    method = get_method(config.model.method)
    weights = files.path / method.weights_file
    if not weights.is_file():
        hint = (f"continue it with `rpgen train ... --out {files.path} --resume`" if method.distributed
                else "train it again")
        raise RpgenError(f"{files.path}: training has not finished (no {method.weights_file}); {hint}")
    files.require(TOKENIZER, RUN_INFO, COPIED)
    layout, info = files.layout(), files.info()
    if config.model.mamba_impl == "cuda" and not (torch.device(device).type == "cuda" and mamba_ssm_available()):
        config = config.replace("model", mamba_impl="torch")  # same parameter names
    model = method.build(config, layout, num_states=info.get("num_states", info.get("num_checkpoints")),
                         cond_dim=info.get("condition_dim"))
    tensors = read_tensors(weights)
    check_finite(tensors, name=weights)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise RpgenError(f"{weights}: cannot load the trained model ({first_line(e, typed=False)})") from None
    copied = files.copied(layout)
    return Run(files.path, config, layout, copied, model.to(device).eval(), info, method)


def in_training(run_dir: Path, config: Config, layout: Layout, model: torch.nn.Module, method: Method) -> Run:
    """A :class:`Run` that samples with ``model`` as it is now, while ``run_dir`` is being trained
    (its static files are written; its generator is not)."""
    files = RunDir(run_dir)
    return Run(files.path, config, layout, files.copied(layout), model, files.info(), method)


def _usable(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device, or a one-line error when this machine has no such device."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise RpgenError(f"device {device!r}: {e}") from None
    available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available()}
    if device.type in available and not available[device.type]():
        raise RpgenError(f"device {str(device)!r}: this machine has no {device.type.upper()} device; use 'cpu'")
    return device
