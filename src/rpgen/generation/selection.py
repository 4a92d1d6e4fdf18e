"""What each generated model is made for: its permutation state, a mixture of two states, a
condition vector, or a (condition, state) pair, checked against the run and drawn with the seed.

Selectors are what :meth:`rpgen.methods.Method.sample` takes per model (``None``: a method
without states); :func:`requested` checks what a call asks for (one-line errors, before anything
is sampled), :func:`draw_states` fills in the states left to chance, :func:`records` says in
each file's metadata and in ``generation.json`` what every model was made for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from rpgen.data.conditions import check_conditions
from rpgen.errors import RpgenError
from rpgen.methods.base import Method


class Run(Protocol):
    """What selection reads of a loaded run (:class:`rpgen.generation.loaded.Run`)."""

    path: Path
    method: Method
    info: dict[str, Any]

    @property
    def num_states(self) -> int: ...

    @property
    def condition_dim(self) -> int | None: ...

    @property
    def states_beside_condition(self) -> bool: ...

    @property
    def binary_conditions(self) -> bool: ...


def requested(run: Run, *, num: int, states: Sequence[int] | None = None,
              conditions: Sequence[Sequence[float]] | None = None, mix: float | None = None) -> list:
    """What each of the models asked for is made for, checked against the run: permutation
    states, condition vectors (``num`` per condition; ``(condition, state)`` pairs when the run
    takes a state beside the condition, the state None to draw), or None (a state to draw, or a
    method without states)."""
    if not run.method.takes_selectors:
        if states is not None or conditions is not None or mix is not None:
            raise RpgenError(f"{run.path} is a {run.method.name} run: it takes no --state, --condition or --mix")
        return [None] * num
    if mix is not None:
        _check_mix(run, mix, states)
    if run.condition_dim is not None:
        return _conditional(run, num=num, states=states, conditions=conditions)
    if conditions is not None:
        raise RpgenError(f"{run.path} is an unconditional run (trained without conditions.json); "
                         "it takes no --condition")
    return [None] * num if states is None else _checked_states(run, states, num)


def _check_mix(run: Run, mix: float, states: Sequence[int] | None) -> None:
    if not 0 < mix < 1:
        raise RpgenError(f"--mix {mix}: must be between 0 and 1 (the weight of the second state)")
    if run.condition_dim is not None or states is not None:
        raise RpgenError(f"--mix draws the states it mixes: {run.path} takes it without --state or "
                         "--condition, and only when unconditional")
    if run.num_states < 2:
        raise RpgenError(f"--mix needs two permutation states; {run.path} has one")


def _conditional(run: Run, *, num: int, states: Sequence[int] | None,
                 conditions: Sequence[Sequence[float]] | None) -> list:
    if states is not None and not run.states_beside_condition:
        raise RpgenError(f"{run.path} is a conditional run without permutation states; use --condition, "
                         "not --state")
    if not conditions:
        raise RpgenError(f"{run.path} is a conditional run: give at least one --condition "
                         f"(a vector of length {run.condition_dim})")
    conditions = [[float(v) for v in c] for c in conditions]
    check_conditions(conditions, dim=run.condition_dim, binary=run.binary_conditions)
    if not run.states_beside_condition:
        return [c for c in conditions for _ in range(num)]
    per_model = [None] * num if states is None else _checked_states(run, states, num)
    return [(c, s) for c in conditions for s in per_model]


def _checked_states(run: Run, states: Sequence[int], num: int) -> list[int]:
    states = list(states)
    if len(states) != num:
        raise RpgenError(f"got {len(states)} permutation states for {num} models")
    for s in states:
        if not 0 <= s < run.num_states:
            raise RpgenError(f"permutation state {s} out of range: this run has states 0..{run.num_states - 1}")
    return states


def draw_states(run: Run, selectors: list, *, rng: torch.Generator, mix: float | None = None) -> list:
    """``selectors`` with states left to draw (None) drawn at random from ``rng``.

    With ``mix``, each model gets a mixture ``{i: 1 - mix, j: mix}`` of two states drawn at
    random from different training runs (when the run knows more than one; else any two
    distinct states): a selector between the states it was trained on. A run with states
    beside the condition gets a state drawn for each ``(condition, None)`` pair.
    """
    if run.states_beside_condition and run.method.takes_selectors:
        drawn = torch.randint(0, run.num_states, (len(selectors),), generator=rng).tolist()
        return [(c, d if s is None else s) for (c, s), d in zip(selectors, drawn)]
    if not run.method.takes_selectors or run.condition_dim is not None or selectors[0] is not None:
        return selectors
    if mix is None:
        return torch.randint(0, run.num_states, (len(selectors),), generator=rng).tolist()
    lineage = lineage_of_state(run)
    mixed = []
    for _ in selectors:
        i, j = torch.randperm(run.num_states, generator=rng)[:2].tolist()
        if len(set(lineage)) > 1:
            others = [s for s in range(run.num_states) if lineage[s] != lineage[i]]
            j = others[int(torch.randint(0, len(others), (1,), generator=rng))]
        mixed.append({i: 1 - mix, j: mix})
    return mixed


def lineage_of_state(run: Run) -> list[int]:
    """The training run of each permutation state (all 0 when the run did not record a lineage)."""
    state_of, run_of = run.info.get("state_of_checkpoint"), run.info.get("run_of_checkpoint")
    if not state_of or not run_of:
        return [0] * run.num_states
    out = [0] * run.num_states
    for state, training_run in zip(state_of, run_of):
        out[state] = training_run
    return out


def records(run: Run, selectors: list) -> tuple[list[dict[str, str]], dict]:
    """Each model's file metadata, and what generation.json records of the selectors."""
    if not run.method.takes_selectors:
        return [{} for _ in selectors], {}
    if run.states_beside_condition:
        return ([{"condition": json.dumps(c), "permutation_state": str(s)} for c, s in selectors],
                {"conditions": [c for c, _ in selectors], "permutation_states": [s for _, s in selectors]})
    if run.condition_dim is not None:
        return [{"condition": json.dumps(c)} for c in selectors], {"conditions": selectors}
    if any(isinstance(s, dict) for s in selectors):
        selectors = [{str(state): w for state, w in s.items()} for s in selectors]
        return [{"permutation_state": json.dumps(s)} for s in selectors], {"permutation_states": selectors}
    return [{"permutation_state": str(s)} for s in selectors], {"permutation_states": selectors}
