"""Benchmark: the quickstart (digits zoo -> train -> generate -> evaluate) for several seeds.

    python bench/quickstart.py [--seeds 0 1 2] [--out runs/bench-quickstart]

Writes bench/results/quickstart.md and bench/results/quickstart.json: the machine, wall time
per stage, and test accuracy of the 50 training checkpoints and the generated models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import machine
from rpgen.quickstart import run_quickstart

RESULTS = Path(__file__).resolve().parent / "results"


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

    command = "python bench/quickstart.py " + " ".join(sys.argv[1:])
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart.json").write_text(json.dumps({"machine": info, "command": command.strip(),
                                                         "runs": runs}, indent=1) + "\n")
    lines = [
        "# Quickstart benchmark",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"Python {info['python']}, torch {info['torch']}",
        "",
        "Test accuracy (%) on the held-out digits split, mean / min / max; 50 training checkpoints vs "
        f"{args.num} generated models per seed.",
        "",
        "| seed | checkpoints | generated | gen mean − ckpt mean (pp) | gen min − ckpt min (pp) "
        "| collect s | train s | generate s | evaluate s | total s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        c, g, s = r["checkpoints"], r["generated"], r["stage_s"]
        lines.append(f"| {r['seed']} | {stats(c)} | {stats(g)} | {statistics.mean(g) - statistics.mean(c):+.2f} "
                     f"| {min(g) - min(c):+.2f} | {s['collect']} | {s['train']} | {s['generate']} "
                     f"| {s['evaluate']} | {r['wall_s']} |")
    lines.append("")
    (RESULTS / "quickstart.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
