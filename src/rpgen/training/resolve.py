"""The "auto" settings that follow the zoo: backbone width, learning rate, steps, sampling temperature.

A generator that reproduces R training runs of a P-parameter model stores about R x P distinct
values in its own weights. Measured on the digits zoos (DESIGN.md §6; bench/results/diverse.md):

- one run (6.3K parameters): d_model 64 at lr 2e-2 for 2,000 steps reaches the checkpoints;
- ten runs (63K distinct values): d_model 64 fails at any learning rate (loss 0.036, 42%
  accuracy); d_model 128 at lr 3e-3 for 3,000 steps works; lr 2e-2 stalls at the "state
  ignored" loss whatever the width.

- fifty runs (319K): d_model 256 at lr 3e-3 is still learning when a 3,000-step schedule ends
  (loss 0.049, 36.8% accuracy); the same settings for 6,000 steps reach loss 0.0019 and 97.8%
  against 98.4% for the checkpoints (issue 13, a sweep on one H100; bench/results/diverse.md
  measures the default on two CPU cores).

- one run of a large model (a DoRA rank-64 adapter zoo, 595K parameters): d_model 64 ends on a
  loss plateau (0.25) 0.84 pp below its checkpoints (bench/results/adapters.md, before this
  rule); at d_model 256, lr 2e-2 spikes (1.44 at step 250) and trails lr 3e-3 (loss 0.74 vs 0.68
  at step 325 of 2,000, measured by hand on one shared core). Sized (d_model 256, lr 3e-3, 2,000
  steps) it ends at loss 0.004, 0.11 pp below its checkpoints (bench/results/adapters.md).

So ``model.d_model = 0`` becomes 64 x sqrt(R x P / 16,384), rounded to a power of two and
clamped to [64, 256] (one run of the digits CNN: 64; ten runs: 128; fifty: 256); ``train.lr = 0``
becomes 2e-2 for one run at width 64 and 3e-3 otherwise (several runs, or wider); ``train.steps
= 0`` becomes 2,000 for one run and, for more, 3,000 x sqrt(R / 10) rounded down to a thousand,
in [3,000, 12,000] (ten runs: 3,000; twenty: 4,000; fifty: 6,000). What was chosen and why is
written to ``run.json`` (``sizing``).

A conditional zoo stands for more models than it has runs: each run is a map from the condition
to weights. Width and steps count runs x distinct conditions, at most ``condition_dim + 1`` per
run (:func:`models_per_run`). The multimodal digits-tasks zoo (3 modes x 992 ten-bit codes, a
1,178-parameter conv block) then gets d_model 128 and 5,000 steps instead of 64 and 3,000
(bench/results/unseen_multimodal.md; the steps are raised to 9,000 below); the single-mode one
gets d_model 64 and 3,000 steps.

The steps of a conditional run also let every distinct (condition, run) pair be drawn about
:data:`DRAWS_PER_PAIR` times (:func:`steps_for_pairs`). The cap above says how much a smooth map
needs; a map that is far from smooth needs its every point seen. The single-mode zoo (992 tasks,
one run) gets 3,000 steps and 24 draws per task from the rule above either way, and its generator
lands 0.13 pp below its checkpoints (bench/results/unseen_tasks.md). The multimodal zoo has 2,976
pairs, and given the mode its weights are far from linear in the code (a least-squares map per
mode scores 94.15% on held-out tasks against 98.22% for the trained models). 5,000 steps there (13
draws) leave its generator 3.04 pp below the trained models on held-out tasks
(bench/results/unseen_multimodal_default.md); the 9,000 steps this rule gives, 2.81 pp, and 2.74
to 2.87 pp with three other seeds (bench/results/unseen_multimodal_sized.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rpgen.config import Config
from rpgen.data.lineage import Runs
from rpgen.data.tokenizer import Layout

BASE_WIDTH = 64
MAX_WIDTH = 256
VALUES_PER_BASE_WIDTH = 16_384
"""Distinct values (runs x parameters) a width-64 backbone is sized for."""
ONE_RUN = {"lr": 2e-2, "steps": 2000}
"""For one run at the base width."""
MANY_RUNS = {"lr": 3e-3, "steps": 3000}
"""For ten runs; the steps grow with sqrt(runs / 10) (:func:`auto_steps`). The lr also suits one
run at a larger width."""
MAX_STEPS = 12_000
DRAWS_PER_PAIR = 24
"""How often a conditional run's steps draw each distinct (condition, run) pair at least
(:func:`steps_for_pairs`): what the single-mode digits-tasks zoo gets, 3,000 steps x 8 / 992."""
CONDITIONAL_TEMPERATURE = 0.25
"""Sampling temperature of a conditional run (:func:`auto_temperature`)."""


def auto_steps(runs: int) -> int:
    """Training steps for a zoo of ``runs`` training runs (or distinct models, :func:`resolve_sizing`)."""
    if runs == 1:
        return ONE_RUN["steps"]
    steps = int(MANY_RUNS["steps"] * math.sqrt(runs / 10) // 1000 * 1000)
    return min(max(steps, MANY_RUNS["steps"]), MAX_STEPS)


def distinct_pairs(conditions: torch.Tensor, runs: Runs) -> int:
    """How many distinct (condition, run) pairs the checkpoints hold: the distinct models a
    conditional generator is trained to reproduce."""
    run_column = torch.tensor(runs.index, dtype=conditions.dtype).unsqueeze(1)  # (K, 1)
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


def auto_temperature(conditional: bool) -> float:
    """``sample.temperature = "auto"``: 1 for an unconditional run, :data:`CONDITIONAL_TEMPERATURE` for a
    conditional one.

    Given a condition (and a state), a conditional zoo's checkpoints lie close together (on the
    digits-tasks zoos: the last epochs of one training run per task and mode). On the three-mode zoo,
    at temperature 1 the generated models of one task and state lie 167x as far apart as those
    checkpoints, about in proportion to the temperature, and half of them are broken; at 0.25 they
    lie 39x as far apart (7x on the single-mode zoo), distinct for every seed, and score 95.18% on
    the held-out tasks against 95.33% at 0 and 91.86% at 1 (bench/results/unseen_multimodal_default.md,
    unseen_tasks.md; bench/README.md, "The default: conditional runs sample at temperature 0.25").
    """
    return CONDITIONAL_TEMPERATURE if conditional else 1.0


def models_per_run(conditions: torch.Tensor | None) -> int:
    """How many distinct models one training run of a zoo stands for: 1 without conditions; with
    them, the number of distinct conditions, at most ``condition_dim + 1`` (a map that is smooth in
    the condition is pinned down by that many points: on the single-mode digits-tasks zoo a
    least-squares map from the 10 bits scores 98.5% against 98.8% for the trained heads)."""
    if conditions is None:
        return 1
    return min(len(torch.unique(conditions, dim=0)), conditions.shape[1] + 1)


def resolve_sizing(config: Config, layout: Layout, runs: Runs,
                   conditions: torch.Tensor | None = None) -> tuple[Config, dict[str, Any]]:
    """``config`` with its auto (0) d_model, lr and steps filled from the zoo (``conditions``: one
    row per checkpoint, for a conditional zoo), and a record of the choice for run.json."""
    per_run = models_per_run(conditions)
    models = runs.num_runs * per_run
    distinct = models * layout.num_params
    record: dict[str, Any] = {"runs": runs.num_runs, "runs_from": runs.source, "distinct_values": distinct}
    if conditions is not None:
        record["models_per_run"] = per_run
        record["condition_run_pairs"] = pairs = distinct_pairs(conditions, runs)
    kind = "one training run" if runs.num_runs == 1 else "several training runs"
    counted = (f"{runs.num_runs} run(s)" if conditions is None
               else f"{runs.num_runs} run(s) x {per_run} conditions (at most condition_dim + 1)")
    chosen = []
    if config.model.d_model == 0:
        config = config.replace("model", d_model=auto_width(distinct))
        chosen.append(f"model.d_model = {config.model.d_model} for {distinct:,} distinct values "
                      f"({counted} x {layout.num_params:,} parameters)")
    if config.train.lr == 0:
        config = config.replace("train", lr=auto_lr(runs.num_runs, config.model.d_model))
        chosen.append(f"train.lr = {config.train.lr:g} for a zoo of {kind} and d_model {config.model.d_model}")
    if config.train.steps == 0:
        batch = min(config.train.batch_size, len(runs.index))
        by_models = auto_steps(models)
        by_pairs = 0 if conditions is None else steps_for_pairs(pairs, batch)
        steps = max(by_models, by_pairs)
        why = (f"{pairs:,} distinct (condition, run) pairs, each drawn about {DRAWS_PER_PAIR} times in batches "
               f"of {batch}" if by_pairs > by_models else f"{models} distinct model(s) ({counted})")
        config = config.replace("train", steps=steps)
        chosen.append(f"train.steps = {steps} for {why}")
    if config.sample.temperature == "auto":
        config = config.replace("sample", temperature=auto_temperature(conditions is not None))
        chosen.append(f"sample.temperature = {config.sample.temperature:g} for "
                      f"{'a conditional' if conditions is not None else 'an unconditional'} run")
    record["chosen"] = chosen
    return config, record
