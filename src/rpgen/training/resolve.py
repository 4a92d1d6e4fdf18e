"""Every "auto" setting of a run, resolved in one pass when the run starts.

:func:`resolve` fills each setting of :data:`RULES`, in that order, from the checkpoint set and
the machine; its result is what ``config.toml`` records, and its record (the zoo's counts and
one sentence per sized choice) is ``run.json``'s ``sizing``. Generation, evaluation and
``--resume`` then read concrete values. :data:`FILLED_ON_START`, the settings this pass may
fill, is what ``--resume`` accepts at their defaults.

Sized from the zoo. A generator that reproduces R training runs of a P-parameter model stores
about R x P distinct values in its own weights:

- ``model.d_model = 0``: 64 x sqrt(R x P / 16,384), rounded to a power of two, in [64, 256].
  The digits CNN (6.3K parameters) gets 64 for one run, 128 for ten and 256 for fifty; width 64
  does not hold ten runs at any learning rate (bench/results/diverse.md), and a one-run zoo of
  595K-parameter adapters needs 256 to reach its checkpoints (bench/results/adapters.md).
- ``train.lr = 0``: 2e-2 for one run at width 64, else 3e-3; 2e-2 stalls a multi-run zoo at the
  loss of a generator that ignores the state (bench/results/diverse.md).
- ``train.steps = 0``: 2,000 for one run; for more, 3,000 x sqrt(R / 10) rounded down to a
  thousand, in [3,000, 12,000] (ten runs: 3,000; fifty: 6,000, which a 3,000-step schedule
  leaves still learning: bench/results/diverse_sweep_h100.json, bench/results/diverse.md).
- A conditional zoo stands for more models than it has runs: each run maps conditions to
  weights, and counts as its distinct conditions, at most ``condition_dim + 1``
  (:func:`models_per_run`): the three-mode digits-tasks zoo gets width 128
  (bench/results/unseen_multimodal.md), the single-mode one 64. Its steps also draw every
  distinct (condition, run) pair :data:`DRAWS_PER_PAIR` times (:func:`steps_for_pairs`): a map
  far from smooth in the condition needs every point seen. The three-mode zoo (2,976 pairs) then
  gets 9,000 steps and lands 2.74 to 2.87 pp below its trained models on held-out tasks over
  four seeds, against 3.04 pp at 5,000 steps (bench/results/unseen_multimodal_sized.md,
  unseen_multimodal_default.md).
- ``sample.temperature = "auto"``: 1 for an unconditional run, 0.25 for a conditional one
  (:func:`auto_temperature`).
- ``data.states = "auto"``: one permutation state per training run when the zoo has several,
  else one per checkpoint (unconditional) or none (conditional: the condition alone).

From the machine: ``model.mamba_impl`` (the mamba-ssm kernels on CUDA when installed),
``model.d_state`` (128 with the kernels, 16 on the pure-PyTorch scan) and
``train.mixed_precision`` (bf16 autocast on CUDA); a method that trains in full precision only
(:attr:`rpgen.methods.base.Method.mixed_precision`) gets ``"no"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from rpgen.config import Config
from rpgen.data.lineage import Lineage
from rpgen.errors import RpgenError
from rpgen.methods.base import Method
from rpgen.methods.diffusion import auto_temperature

BASE_WIDTH = 64
MAX_WIDTH = 256
VALUES_PER_BASE_WIDTH = 16_384
"""Distinct values (runs x parameters) a width-64 backbone is sized for."""
ONE_RUN = {"lr": 2e-2, "steps": 2000}
"""For one training run at the base width."""
MANY_RUNS = {"lr": 3e-3, "steps": 3000}
"""For ten training runs; the steps grow with sqrt(runs / 10) (:func:`auto_steps`). The lr also
suits one run at a larger width."""
MAX_STEPS = 12_000
DRAWS_PER_PAIR = 24
"""How often a conditional run's steps draw each distinct (condition, run) pair at least
(:func:`steps_for_pairs`): what the single-mode digits-tasks zoo gets from the width rule, 3,000
steps x 8 / 992, and its generator lands 0.13 pp below its checkpoints
(bench/results/unseen_tasks.md)."""


def auto_steps(runs: int) -> int:
    """Training steps for a zoo of ``runs`` training runs (or distinct models, :func:`models_per_run`)."""
    if runs == 1:
        return ONE_RUN["steps"]
    steps = int(MANY_RUNS["steps"] * math.sqrt(runs / 10) // 1000 * 1000)
    return min(max(steps, MANY_RUNS["steps"]), MAX_STEPS)


def distinct_pairs(conditions: torch.Tensor, lineage: Lineage) -> int:
    """How many distinct (condition, training run) pairs the checkpoints hold: the distinct models a
    conditional generator is trained to reproduce."""
    run_column = torch.tensor(lineage.index, dtype=conditions.dtype).unsqueeze(1)  # (K, 1)
    return len(torch.unique(torch.cat([conditions, run_column], dim=1), dim=0))


def steps_for_pairs(pairs: int, batch_size: int) -> int:
    """Steps that draw each of ``pairs`` distinct models :data:`DRAWS_PER_PAIR` times in batches of
    ``batch_size`` checkpoints, rounded up to a thousand, at most :data:`MAX_STEPS`."""
    return min(math.ceil(DRAWS_PER_PAIR * pairs / batch_size / 1000) * 1000, MAX_STEPS)


def auto_lr(runs: int, width: int) -> float:
    """Peak learning rate for a zoo of ``runs`` training runs and a backbone ``width`` wide."""
    return ONE_RUN["lr"] if runs == 1 and width <= BASE_WIDTH else MANY_RUNS["lr"]


def auto_width(distinct_values: int) -> int:
    """Backbone width for a zoo of ``distinct_values`` = runs x parameters."""
    ratio = math.sqrt(max(distinct_values, 1) / VALUES_PER_BASE_WIDTH)
    width = BASE_WIDTH * 2 ** round(math.log2(max(ratio, 1.0)))
    return int(min(max(width, BASE_WIDTH), MAX_WIDTH))


def models_per_run(conditions: torch.Tensor | None) -> int:
    """How many distinct models one training run of a zoo stands for: 1 without conditions; with
    them, the number of distinct conditions, at most ``condition_dim + 1`` (a map that is smooth in
    the condition is pinned down by that many points: on the single-mode digits-tasks zoo a
    least-squares map from the 10 bits scores 98.5% against 98.8% for the trained heads,
    bench/results/unseen_tasks.md)."""
    if conditions is None:
        return 1
    return min(len(torch.unique(conditions, dim=0)), conditions.shape[1] + 1)


@dataclass(frozen=True)
class Facts:
    """What the resolution reads: the checkpoint set, the method and the machine.

    ``folder``: the checkpoints the run trains on (the zoo, or its aligned copies);
    ``num_params``: generated values per checkpoint; ``conditions``: (K, C), for a conditional zoo.
    """

    folder: Path
    num_params: int
    lineage: Lineage
    conditions: torch.Tensor | None
    method: Method
    device: torch.device
    resume: bool = False

    @property
    def num_runs(self) -> int:
        return self.lineage.num_runs

    @cached_property
    def per_run(self) -> int:
        return models_per_run(self.conditions)

    @property
    def models(self) -> int:
        """Distinct models the generator is trained to reproduce: runs x models per run."""
        return self.num_runs * self.per_run

    @property
    def distinct_values(self) -> int:
        return self.models * self.num_params

    @cached_property
    def pairs(self) -> int | None:
        return None if self.conditions is None else distinct_pairs(self.conditions, self.lineage)

    @property
    def counted(self) -> str:
        return (f"{self.num_runs} run(s)" if self.conditions is None
                else f"{self.num_runs} run(s) x {self.per_run} conditions (at most condition_dim + 1)")


Fill = Callable[[Config, Facts], "tuple[Any, str | None]"]


@dataclass(frozen=True)
class Rule:
    """How one setting is filled: ``fill(config, facts)`` -> (its value, the sentence that
    ``run.json`` records for it, or None)."""

    section: str
    key: str
    fill: Fill


def auto_center(config: Config) -> str:
    """``data.center``: "base" when ``data.base`` names a base model, else "element" when "auto"
    ("tensor" for an aligned run, whose statistics are fitted before it is aligned;
    bench/results/center.md). Needed before the layout is fitted, so it reads the config only."""
    center, base = config.data.center, config.data.base
    aligned = config.data.align != "none"  # the layout is fitted before the copies are aligned
    if center == "auto":
        return "base" if base else ("tensor" if aligned else "element")
    if aligned and center != "tensor":
        raise RpgenError(f"config data.center = {center!r} cannot be combined with data.align (the statistics are "
                         "fitted before the checkpoints are aligned); use data.center = 'tensor'")
    if (center == "base") != bool(base):
        raise RpgenError(f"config data.center = {center!r} " + ("needs a base model: data.base (--base FILE)"
                                                               if center == "base" else
                                                               f"does not use data.base = {base!r}; drop one"))
    return center


def _center(config: Config, facts: Facts) -> tuple[str, None]:
    return auto_center(config), None


def _checkpoint_dir(config: Config, facts: Facts) -> tuple[str, None]:
    return str(facts.folder.resolve()), None


def _width(config: Config, facts: Facts) -> tuple[int, str | None]:
    if config.model.d_model != 0:
        return config.model.d_model, None
    width = auto_width(facts.distinct_values)
    return width, (f"model.d_model = {width} for {facts.distinct_values:,} distinct values "
                   f"({facts.counted} x {facts.num_params:,} parameters)")


def _lr(config: Config, facts: Facts) -> tuple[float, str | None]:
    if config.train.lr != 0:
        return config.train.lr, None
    lr = auto_lr(facts.num_runs, config.model.d_model)
    kind = "one training run" if facts.num_runs == 1 else "several training runs"
    return lr, f"train.lr = {lr:g} for a zoo of {kind} and d_model {config.model.d_model}"


def _steps(config: Config, facts: Facts) -> tuple[int, str | None]:
    if config.train.steps != 0:
        return config.train.steps, None
    batch = min(config.train.batch_size, len(facts.lineage.index))
    by_models = auto_steps(facts.models)
    by_pairs = 0 if facts.pairs is None else steps_for_pairs(facts.pairs, batch)
    why = (f"{facts.pairs:,} distinct (condition, run) pairs, each drawn about {DRAWS_PER_PAIR} times in batches "
           f"of {batch}" if by_pairs > by_models else f"{facts.models} distinct model(s) ({facts.counted})")
    steps = max(by_models, by_pairs)
    return steps, f"train.steps = {steps} for {why}"


def _temperature(config: Config, facts: Facts) -> tuple[float, str | None]:
    if config.sample.temperature != "auto":
        return config.sample.temperature, None
    conditional = facts.conditions is not None
    temperature = auto_temperature(conditional)
    return temperature, (f"sample.temperature = {temperature:g} for "
                         f"{'a conditional' if conditional else 'an unconditional'} run")


def _states(config: Config, facts: Facts) -> tuple[str, None]:
    states, conditional = config.data.states, facts.conditions is not None
    if states == "auto":
        states = "run" if facts.num_runs > 1 else ("none" if conditional else "checkpoint")
    elif states == "checkpoint" and conditional and not facts.resume:
        raise RpgenError("config data.states = 'checkpoint' does not fit a conditional run (a state per checkpoint "
                         "cannot be chosen for a new condition): use 'run' (a state per training run beside the "
                         "condition) or 'none'")
    return states, None


def _mamba_impl(config: Config, facts: Facts) -> tuple[str, None]:
    from rpgen.models.backbones import mamba_ssm_available

    impl, device = config.model.mamba_impl, facts.device
    if impl == "auto":
        impl = "cuda" if device.type == "cuda" and mamba_ssm_available() else "torch"
    elif impl == "cuda" and not (device.type == "cuda" and mamba_ssm_available()):
        raise RpgenError("config model.mamba_impl = 'cuda' needs a CUDA device and the mamba-ssm package "
                         "(pip install 'rpgen[cuda]')")
    return impl, None


def _d_state(config: Config, facts: Facts) -> tuple[int, None]:
    return config.model.d_state or (128 if config.model.mamba_impl == "cuda" else 16), None


def _precision(config: Config, facts: Facts) -> tuple[str, None]:
    precision = config.train.mixed_precision
    if not facts.method.mixed_precision:
        return "no", None
    if precision == "auto":
        precision = "bf16" if facts.device.type == "cuda" else "no"
    return precision, None


RULES: tuple[Rule, ...] = (
    Rule("data", "checkpoint_dir", _checkpoint_dir),
    Rule("data", "center", _center),
    Rule("model", "d_model", _width),
    Rule("train", "lr", _lr),
    Rule("train", "steps", _steps),
    Rule("sample", "temperature", _temperature),
    Rule("data", "states", _states),
    Rule("model", "mamba_impl", _mamba_impl),
    Rule("model", "d_state", _d_state),
    Rule("train", "mixed_precision", _precision),
)
"""Every setting a run fills when it starts, in order (a rule reads those before it)."""
FILLED_ON_START = frozenset((rule.section, rule.key) for rule in RULES)


def resolve(config: Config, facts: Facts) -> tuple[Config, dict[str, Any]]:
    """``config`` with every setting of :data:`RULES` filled, and the record of the sizing for run.json."""
    record: dict[str, Any] = {"runs": facts.num_runs, "runs_from": facts.lineage.source,
                              "distinct_values": facts.distinct_values}
    if facts.conditions is not None:
        record["models_per_run"] = facts.per_run
        record["condition_run_pairs"] = facts.pairs
    chosen = []
    for rule in RULES:
        value, note = rule.fill(config, facts)
        config = config.replace(rule.section, **{rule.key: value})
        if note is not None:
            chosen.append(note)
    record["chosen"] = chosen
    return config, record
