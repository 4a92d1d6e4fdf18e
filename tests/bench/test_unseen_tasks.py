"""bench/unseen_tasks.py's spread on a small single-mode digits-tasks zoo, on real trained files."""

from safetensors.torch import load_file

from conftest import TASKS_ZOO_CODES, load_bench
from rpgen.zoo import digits_tasks as zoo

bench = load_bench("unseen_tasks")


def test_spread_compares_generated_heads_with_the_tasks_checkpoints(tasks_zoo):
    """The checkpoints themselves spread like the zoo (1), copies of one not at all (0), and the heads
    of another task farther than the task's own checkpoints (> 1); held-out and seen tasks alike."""
    for code in ("0110000010", "1100000000"):  # held-out, seen
        own = [load_file(zoo.checkpoint_path(tasks_zoo, code, k)) for k in range(2)]
        assert bench.spread(own, code, tasks_zoo, 2) == 1.0
        assert bench.spread([own[0], own[0]], code, tasks_zoo, 2) == 0.0
        other = [load_file(tasks_zoo / zoo.TRAIN_DIR / zoo.checkpoint_name(c, 1)) for c in TASKS_ZOO_CODES[:2]]
        assert bench.spread(other, code, tasks_zoo, 2) > 1.0
