"""What each generated model is made for, checked against the run before anything is sampled."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rpgen.errors import RpgenError
from rpgen.generation.selection import draw_states, lineage_of_state, records, requested


def fake_run(*, num_states=4, condition_dim=None, beside=False, binary=True, selectors=True, info=None):
    """What the selectors read of a loaded run."""
    method = SimpleNamespace(takes_selectors=selectors, name="rpg" if selectors else "pdiff")
    return SimpleNamespace(path=Path("RUN"), method=method, num_states=num_states, condition_dim=condition_dim,
                           states_beside_condition=beside, binary_conditions=binary, info=info or {})


def test_unconditional_states_and_mixtures():
    run = fake_run(info={"state_of_checkpoint": [0, 1, 2, 3], "run_of_checkpoint": [0, 0, 1, 1]})
    assert requested(run, num=2) == [None, None] and requested(run, num=2, states=[3, 0]) == [3, 0]
    assert lineage_of_state(run) == [0, 0, 1, 1]
    mixed = draw_states(run, [None] * 5, rng=torch.Generator().manual_seed(0), mix=0.5)
    for m in mixed:  # two states of different training runs, half each
        (i, a), (j, b) = m.items()
        assert a == b == 0.5 and lineage_of_state(run)[i] != lineage_of_state(run)[j]
    metadata, record = records(run, mixed)
    assert metadata[0]["permutation_state"].startswith("{") and len(record["permutation_states"]) == 5
    for kwargs, needle in (({"states": [7]}, "out of range"), ({"states": [0, 1]}, "2 permutation states for 1"),
                           ({"mix": 1.5}, "--mix 1.5"), ({"conditions": [[1.0]]}, "unconditional run")):
        with pytest.raises(RpgenError, match=needle):
            requested(run, num=1, **kwargs)


def test_conditions_with_and_without_states_beside_them():
    run = fake_run(condition_dim=2)
    assert requested(run, num=2, conditions=[[0, 1]]) == [[0.0, 1.0], [0.0, 1.0]]
    for kwargs, needle in (({}, "give at least one --condition"), ({"conditions": [[0, 1, 1]]}, "has length 3"),
                           ({"conditions": [[0.5, 1]]}, "not binary"), ({"conditions": [[0, 1]], "states": [0]},
                                                                         "without permutation states")):
        with pytest.raises(RpgenError, match=needle):
            requested(run, num=1, **kwargs)
    beside = fake_run(condition_dim=2, beside=True, num_states=3)
    pairs = requested(beside, num=2, conditions=[[0, 1]])
    assert pairs == [([0.0, 1.0], None), ([0.0, 1.0], None)]
    drawn = draw_states(beside, pairs, rng=torch.Generator().manual_seed(0))
    assert all(c == [0.0, 1.0] and 0 <= s < 3 for c, s in drawn)
    assert records(beside, drawn)[1]["conditions"] == [[0.0, 1.0]] * 2


def test_a_method_without_states_takes_none():
    run = fake_run(selectors=False)
    assert requested(run, num=3) == [None] * 3 and records(run, [None] * 3) == ([{}, {}, {}], {})
    with pytest.raises(RpgenError, match="pdiff run: it takes no --state"):
        requested(run, num=1, states=[0])
