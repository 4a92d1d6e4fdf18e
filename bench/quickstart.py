"""Benchmark: the quickstart (digits zoo -> train -> generate -> evaluate) for several seeds.

    python bench/quickstart.py [--seeds 0 1 2] [--out runs/bench-quickstart]

Writes bench/results/quickstart.md and bench/results/quickstart.json (through ``common.write_results``):
the machine, wall time per stage, and test accuracy of the training checkpoints and the generated models.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import Report, Table, write_results
from rpgen.api import run_quickstart


def stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} / {min(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quickstart"))
    parser.add_argument("--num", type=int, default=10)
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        start = time.perf_counter()
        results, times = run_quickstart(args.out / f"seed{seed}", num=args.num, seed=seed, overwrite=True,
                                        progress=False)
        runs.append({"seed": seed, "wall_s": round(time.perf_counter() - start, 1),
                     "stage_s": {k: round(v, 1) for k, v in times.items()},
                     "checkpoints": results.checkpoints, "generated": results.generated})
        print(f"seed {seed}: {runs[-1]['wall_s']} s, checkpoints {stats(results.checkpoints)}, "
              f"generated {stats(results.generated)}", flush=True)

    print(write_results("quickstart", {"runs": runs}, render))


def counts(runs: list[dict], key: str) -> str:
    """How many models ``key`` holds per seed (``50``, or ``10/20`` if the seeds differ)."""
    return "/".join(str(n) for n in dict.fromkeys(len(r[key]) for r in runs))


def render(data: dict) -> Report:
    runs = data["runs"]
    rows = []
    for r in runs:
        c, g, s = r["checkpoints"], r["generated"], r["stage_s"]
        rows.append([r["seed"], stats(c), stats(g), f"{statistics.mean(g) - statistics.mean(c):+.2f}",
                     f"{min(g) - min(c):+.2f}", s["collect"], s["train"], s["generate"], s["evaluate"], r["wall_s"]])
    return Report(
        title="Quickstart benchmark",
        intro=("Test accuracy (%) on the held-out digits split, mean / min / max; "
               f"{counts(runs, 'checkpoints')} training checkpoints vs {counts(runs, 'generated')} generated models "
               "per seed."),
        table=Table(["seed", "checkpoints", "generated", "gen mean − ckpt mean (pp)", "gen min − ckpt min (pp)",
                     "collect s", "train s", "generate s", "evaluate s", "total s"], rows, "lllrrrrrrr"),
    )


if __name__ == "__main__":
    main()
