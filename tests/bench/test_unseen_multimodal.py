"""bench/unseen_multimodal.py on a small multimodal digits-tasks zoo: the mode check, the linear map
and the coverage count, on real trained files.

"""

import pytest

from conftest import TASKS_ZOO_CODES, load_bench
from rpgen.evaluation.baselines import LinearMap
from rpgen.zoo import digits_tasks as zoo

bench = load_bench("unseen_multimodal")


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm") / "zoo"
    zoo.collect_digits_tasks(out, num_checkpoints=2, codes=TASKS_ZOO_CODES, modes=3, progress=False)
    return bench.TasksZoo(out)


def test_each_checkpoint_is_nearest_its_own_mode(modes):
    codes = [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT]
    models = [modes.checkpoints(c) for c in codes]  # mode by mode, checkpoint by checkpoint
    states = [[m for m in range(modes.modes) for _ in range(modes.per_mode)] for _ in codes]
    accuracy = [modes.accuracy(g, [c] * len(g)) for c, g in zip(codes, models)]
    result = bench.coverage(modes, codes, models, states, accuracy)
    assert result["nearest_mode_counts"] == [len(codes) * modes.per_mode] * modes.modes
    assert result["tasks_by_modes_reached"] == {"1": 0, "2": 0, "3": len(codes)}
    assert result["broken"] == 0 and result["state_is_nearest_mode"] == result["models"]


def test_an_average_of_modes_is_far_from_every_mode(modes):
    codes = [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT]
    averages = [[{k: sum(s[k] for s in modes.checkpoints(c)) / (modes.modes * modes.per_mode)
                  for k in modes.checkpoints(c)[0]}] for c in codes]
    accuracy = [modes.accuracy(g, [c]) for c, g in zip(codes, averages)]
    result = bench.coverage(modes, codes, averages, [[None]] * len(codes), accuracy)
    assert result["median_distance_to_nearest_mode_over_between_modes"] > 0.4  # an own checkpoint: ~0
    assert result["state_is_nearest_mode"] is None


def test_mode_check_and_linear_map(modes):
    check = bench.mode_check(modes, [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT])
    assert len(check["mode_means"]) == 3 and all(a > 80 for a in check["mode_means"])
    assert list(check["midpoint_by_pair_mean"]) == ["0-1", "0-2", "1-2"]
    assert check["midpoint_0_1_mean"] == check["midpoint_by_pair_mean"]["0-1"]
    linear = LinearMap((zoo.code_bits(c), s) for c in modes.train_codes for s in modes.checkpoints(c))
    model = linear.model(zoo.code_bits("0110000010"))
    zoo.TaskBlock().load_state_dict(model, strict=True)


def test_regressors_given_the_mode(modes):
    splits = {"heldout": [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT], "seen": modes.train_codes[:2]}
    result = bench.mode_maps(modes, splits)
    assert list(result) == ["heldout", "seen"]
    for means in result.values():
        assert list(means) == ["1", "2", "3"] and all(0 <= a <= 100 for a in means.values())


def test_head_only_modes_are_trained_per_mode(modes):
    check = bench.head_only_check(modes, [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT], list(TASKS_ZOO_CODES))
    assert len(check["mode_means"]) == 3 and all(a > 90 for a in check["mode_means"])
    assert 0 <= check["linear_map_mean"] <= 100 and 0 <= check["midpoint_0_1_mean"] <= 100


def test_spread_compares_one_state_with_its_mode(modes):
    """The checkpoints themselves spread like the zoo (1); copies of one checkpoint not at all (0)."""
    codes = [c for c in TASKS_ZOO_CODES if c in zoo.HELDOUT]
    states = [[m for m in range(modes.modes) for _ in range(modes.per_mode)] for _ in codes]
    assert bench.spread(modes, codes, [modes.checkpoints(c) for c in codes], states) == 1.0
    copies = [[modes.checkpoints(c, m)[0] for m in range(modes.modes) for _ in range(modes.per_mode)] for c in codes]
    assert bench.spread(modes, codes, copies, states) == 0.0
    assert bench.spread(modes, codes, copies, [[None] * len(s) for s in states]) is None
