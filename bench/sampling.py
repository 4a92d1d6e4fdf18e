"""Benchmark: samplers and step counts on a trained quickstart run (accuracy vs wall time).

    python bench/sampling.py --run RUN_DIR [--num 10] [--seed 0] [--out runs/bench-sampling]

Without ``--run`` it first trains the quickstart (digits zoo, quickstart preset) under ``--out``.
For every setting it generates ``--num`` models with the same seed (so the same permutation
states) and evaluates them on the held-out digits split. Writes bench/results/sampling.md and
bench/results/sampling.json ({"command", "machine", "run", "checkpoints", "rows": [{"sampler",
"steps", "acc_mean", "acc_min", "wall_s"}...]}). ``wall_s`` is the time to generate all models
(backbone + denoising + writing), not counting evaluation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import Report, Table, portable_path, write_results
from rpgen.formats.checkpoints import load_state_dict
from rpgen.formats.listing import list_checkpoints
from rpgen.config import preset
from rpgen.generation import generate
from rpgen.generation import load_run
from rpgen.zoo.digits import DigitsCNN, collect_digits, evaluate

SETTINGS = [("ddpm", 1000), ("ddim", 100), ("ddim", 60), ("ddim", 20), ("ddim", 10),
            ("dpm", 20), ("dpm", 10), ("dpm", 5)]


def accuracies(paths: list[Path]) -> list[float]:
    return [evaluate(load_state_dict(p))["accuracy"] for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="finished quickstart run directory (read only)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sampling"))
    parser.add_argument("--num", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run_dir = args.run
    if run_dir is None:
        from rpgen.training import train

        collect_digits(args.out / "checkpoints", num_checkpoints=50, seed=args.seed, overwrite=True, progress=False)
        run_dir = train(args.out / "checkpoints", args.out / "run", preset("quickstart"), overwrite=True,
                        progress=False)
    run = load_run(run_dir)
    ckpt_acc = accuracies(list_checkpoints(run.config.data.checkpoint_dir))
    rows = []
    for sampler, steps in SETTINGS:
        start = time.perf_counter()
        paths = generate(run_dir, args.out / f"{sampler}-{steps}", num=args.num, seed=args.seed, sampler=sampler,
                         steps=steps, overwrite=True, progress=False, device="cpu")
        wall = time.perf_counter() - start
        acc = accuracies(paths)
        rows.append({"sampler": sampler, "steps": steps, "acc_mean": round(statistics.mean(acc), 3),
                     "acc_min": round(min(acc), 3), "acc_max": round(max(acc), 3), "wall_s": round(wall, 2)})
        print(rows[-1], flush=True)

    ckpt = {"acc_mean": round(statistics.mean(ckpt_acc), 3), "acc_min": round(min(ckpt_acc), 3),
            "acc_max": round(max(ckpt_acc), 3), "num": len(ckpt_acc)}
    params = sum(p.numel() for p in DigitsCNN().parameters())
    print(write_results("sampling", {"run": portable_path(run_dir), "num_models": args.num, "seed": args.seed,
                                     "params": params, "checkpoints": ckpt, "rows": rows}, render))


def render(data: dict) -> Report:
    rows, ckpt, ref = data["rows"], data["checkpoints"], data["rows"][0]
    names = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++"}
    reference = f"{names[ref['sampler']]}-{ref['steps']}"
    return Report(
        title="Sampling benchmark",
        intro=(f"Quickstart run (digits zoo, {ckpt['num']} checkpoints, {data['params']:,} parameters), "
               f"{data['num_models']} generated models per setting, seed {data['seed']} (same permutation states "
               "for every setting). Test accuracy "
               f"(%) on the held-out digits split; training checkpoints: mean {ckpt['acc_mean']:.2f}, min "
               f"{ckpt['acc_min']:.2f}, max {ckpt['acc_max']:.2f}. Denoiser evaluations = steps (DPM-Solver++ 2M: "
               "one per step). Wall time: generating all models (backbone once per model, all tokens batched), "
               "no evaluation."),
        table=Table(["sampler", "steps", f"evaluations vs {reference}", "acc mean", "acc min", "acc max",
                     f"mean − {reference} (pp)", "wall s"],
                    [[names[r["sampler"]], r["steps"], f"{ref['steps'] / r['steps']:.0f}x fewer",
                      f"{r['acc_mean']:.2f}",
                      f"{r['acc_min']:.2f}", f"{r['acc_max']:.2f}", f"{r['acc_mean'] - ref['acc_mean']:+.2f}",
                      f"{r['wall_s']:.1f}"] for r in rows], "lrrrrrrr"),
    )

if __name__ == "__main__":
    main()
