"""Benchmark: generating classifiers for tasks the generator never saw (the paper's section 5).

    python bench/unseen_tasks.py [--num-tasks 100 300 992] [--out runs/bench-unseen] [--set key=value ...]

1. Builds the digits-tasks zoo (``rpgen collect digits-tasks``; timed) unless OUT/zoo is complete.
2. For each number of training tasks n, trains a conditional generator on the checkpoints of n seen
   tasks (nested subsets of the 992 seen tasks, drawn with a fixed seed; the 30 held-out tasks are
   never among them).
3. Generates ``--num-generated`` heads for every held-out task and for 20 seen tasks (taken from
   the smallest subset, so every run has seen them) and measures their test accuracy.

For each task it reports: the generated heads (mean over the generated heads); the trained heads
(mean over the task's checkpoints in the zoo); the "nearest seen task" baseline (the checkpoints of
the training task whose code is closest in Hamming distance, evaluated on this task; ties are
averaged; for a seen task, the closest *other* training task); chance (the majority-class rate on
the test split); and a "linear map" control: a least-squares linear map from the code (plus a
constant) to the flattened head weights, fitted on the same training checkpoints as the generator.
If the linear map does as well as the generator, the zoo's code-to-weights relation is close to
linear. Writes bench/results/unseen_tasks.{md,json}.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from common import Report, Table, command_line, machine, markdown, nearest_codes, spread_ratio, write_results
from rpgen.data.conditions import CONDITIONS_FILE, write_conditions
from rpgen.config import Config, apply_overrides
from rpgen.evaluation.baselines import LinearMap
from rpgen.generation import generate
from rpgen.generation import load_run
from rpgen.training import train
from rpgen.zoo import digits_tasks as zoo

NUM_SEEN_EVAL = 20

# The generator used for every run (set on top of the defaults; see the results file for the rest).
SETTINGS = [
    "model.backbone=mamba", "model.d_model=64", "model.num_layers=2", "data.token_size=64",
    "train.steps=1500", "train.batch_size=16", "train.diffusion_batch=256", "train.lr=2e-2",
    "train.warmup_steps=100", "train.save_every=1000", "sample.sampler=ddim", "sample.steps=60",
]


def subset_folder(zoo_dir: Path, codes: list[str], num_checkpoints: int, out: Path) -> Path:
    """A checkpoint folder with the given tasks' files (copied) and their conditions.json."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    conditions = {}
    for code in codes:
        for k in range(num_checkpoints):
            name = zoo.checkpoint_name(code, k)
            shutil.copyfile(zoo_dir / zoo.TRAIN_DIR / name, out / name)
            conditions[name] = zoo.code_bits(code)
    write_conditions(out / CONDITIONS_FILE, conditions)
    return out


def nearest_seen_accuracy(code: str, train_codes: list[str], zoo_dir: Path, num_checkpoints: int) -> float:
    nearest = nearest_codes(code, train_codes)
    heads = [load_file(zoo_dir / zoo.TRAIN_DIR / zoo.checkpoint_name(c, k)) for c in nearest
             for k in range(num_checkpoints)]
    return statistics.mean(zoo.batch_accuracy(heads, [code] * len(heads), zoo_dir=zoo_dir))


def linear_map(train_codes: list[str], zoo_dir: Path, num_checkpoints: int) -> LinearMap:
    """Least squares from [code bits, 1] to the head weights of the training checkpoints."""
    return LinearMap((zoo.code_bits(c), load_file(zoo_dir / zoo.TRAIN_DIR / zoo.checkpoint_name(c, k)))
                     for c in train_codes for k in range(num_checkpoints))


def measure(run_dir: Path, codes: list[str], train_codes: list[str], zoo_dir: Path, manifest: dict, *,
            num_generated: int, out: Path, linear: LinearMap) -> dict:
    """Per-task accuracies of generated heads and the baselines; means over the tasks."""
    start = time.perf_counter()
    generate(run_dir, out, num=num_generated, conditions=[zoo.code_bits(c) for c in codes], seed=0,
             overwrite=True, progress=False, device="cpu")
    generate_s = time.perf_counter() - start
    files = sorted(out.glob("*.safetensors"))
    heads = [load_file(f) for f in files]
    per_model = zoo.batch_accuracy(heads, [c for c in codes for _ in range(num_generated)], zoo_dir=zoo_dir)
    num_ckpt = manifest["num_checkpoints"]
    linear_acc = zoo.batch_accuracy([linear.model(zoo.code_bits(c)) for c in codes], codes, zoo_dir=zoo_dir)
    rows, spreads = [], []
    for i, code in enumerate(codes):
        generated = per_model[i * num_generated:(i + 1) * num_generated]
        spreads.append(spread(heads[i * num_generated:(i + 1) * num_generated], code, zoo_dir, num_ckpt))
        rows.append({"task": code, "generated": statistics.mean(generated), "generated_min": min(generated),
                     "trained": statistics.mean(manifest["tasks"][code]["accuracy"]),
                     "nearest_seen": nearest_seen_accuracy(code, train_codes, zoo_dir, num_ckpt),
                     "chance": manifest["tasks"][code]["chance"], "linear_map": linear_acc[i]})
    means = {f"{key}_mean": round(statistics.mean(r[key] for r in rows), 2)
             for key in ("generated", "trained", "nearest_seen", "chance", "linear_map")}
    return {"tasks": codes, **means, "spread": round(statistics.median(spreads), 2), "per_task": rows,
            "generate_s": round(generate_s, 1)}


def spread(generated: list[dict[str, torch.Tensor]], code: str, zoo_dir: Path, num_checkpoints: int) -> float:
    """Mean distance between one task's generated heads over that between its checkpoints (1: as
    diverse as the zoo for that task; 0: copies of one head)."""
    return spread_ratio(generated, [load_file(zoo.checkpoint_path(zoo_dir, code, k)) for k in range(num_checkpoints)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-unseen"))
    parser.add_argument("--num-tasks", type=int, nargs="+", default=[100, 300, 992])
    parser.add_argument("--num-generated", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-write", action="store_true", help="Print, do not write bench/results.")
    args = parser.parse_args()

    zoo_dir = args.out / "zoo"
    collect_s = None
    if not (zoo_dir / zoo.MANIFEST).is_file():
        start = time.perf_counter()
        zoo.collect_digits_tasks(zoo_dir, progress=False)
        collect_s = round(time.perf_counter() - start, 1)
        print(f"collect: {collect_s} s", flush=True)
    manifest = zoo.load_manifest(zoo_dir)
    seen_all = [c for c, t in manifest["tasks"].items() if t["split"] == zoo.TRAIN_DIR]
    order = seen_all[:]
    random.Random(0).shuffle(order)  # nested subsets: the first n of one fixed order
    seen_eval = sorted(order[:NUM_SEEN_EVAL])
    heldout = list(zoo.HELDOUT)
    settings = SETTINGS + args.overrides
    config = apply_overrides(Config(), settings)

    runs = []
    for n in sorted(args.num_tasks):
        train_codes = sorted(order[:n])
        folder = subset_folder(zoo_dir, train_codes, manifest["num_checkpoints"], args.out / f"train{n}")
        run_dir = args.out / f"run{n}"
        start = time.perf_counter()
        train(folder, run_dir, config, overwrite=True, progress=False)
        train_s = round(time.perf_counter() - start, 1)
        linear = linear_map(train_codes, zoo_dir, manifest["num_checkpoints"])
        held = measure(run_dir, heldout, train_codes, zoo_dir, manifest, num_generated=args.num_generated,
                       out=args.out / f"gen{n}-heldout", linear=linear)
        seen = measure(run_dir, seen_eval, train_codes, zoo_dir, manifest, num_generated=args.num_generated,
                       out=args.out / f"gen{n}-seen", linear=linear)
        runs.append({"num_tasks": n, "num_checkpoints": n * manifest["num_checkpoints"], "train_s": train_s,
                     "heldout": held, "seen": seen})
        print(f"n={n}: train {train_s} s; held-out generated {held['generated_mean']} trained "
              f"{held['trained_mean']} nearest {held['nearest_seen_mean']} chance {held['chance_mean']}; "
              f"seen generated {seen['generated_mean']} trained {seen['trained_mean']}", flush=True)

    main_run = runs[-1]
    temperature = load_run(args.out / f"run{main_run['num_tasks']}").config.sample.temperature
    result = {
        "settings": settings, "temperature": temperature, "collect_s": collect_s,
        "num_generated_per_task": args.num_generated,
        "main_run_num_tasks": main_run["num_tasks"], "train_s": main_run["train_s"],
        "heldout": main_run["heldout"], "seen": main_run["seen"],
        "by_num_train_tasks": [{"num_tasks": r["num_tasks"], "heldout_generated_mean": r["heldout"]["generated_mean"],
                                "heldout_nearest_seen_mean": r["heldout"]["nearest_seen_mean"],
                                "heldout_linear_map_mean": r["heldout"]["linear_map_mean"],
                                "seen_generated_mean": r["seen"]["generated_mean"], "train_s": r["train_s"]}
                               for r in runs],
    }
    if args.no_write:
        result = {"command": command_line(), "machine": machine(), **result}
        print(markdown(render(result), result))
    else:
        print(write_results("unseen_tasks", result, render))


def render(r: dict) -> Report:
    h, s = r["heldout"], r["seen"]
    by_size = Table(["training tasks", "generated", "nearest seen", "linear map", "seen tasks, generated", "train s"],
                    [[b["num_tasks"], f"{b['heldout_generated_mean']:.2f}", f"{b['heldout_nearest_seen_mean']:.2f}",
                      f"{b['heldout_linear_map_mean']:.2f}", f"{b['seen_generated_mean']:.2f}", b["train_s"]]
                     for b in r["by_num_train_tasks"]], "rrrrrr")
    per_task = Table(["task", "generated (mean / min)", "trained", "nearest seen", "chance", "linear map"],
                     [[t["task"], f"{t['generated']:.2f} / {t['generated_min']:.2f}", f"{t['trained']:.2f}",
                       f"{t['nearest_seen']:.2f}", f"{t['chance']:.2f}", f"{t['linear_map']:.2f}"]
                      for t in h["per_task"]], "lrrrrr")
    return Report(
        title="Unseen tasks benchmark",
        intro="\n".join([
            f"Generator settings: `{' '.join(r['settings'])}`"
            + (f", sampled at temperature {r['temperature']:g} (the run's `sample.temperature`)" if "temperature" in r
               else "") + "  ",
            "Zoo collection: " + (f"{r['collect_s']} s" if r["collect_s"] is not None else "reused an existing zoo")
            + f"; main run: {r['main_run_num_tasks']} training tasks, trained in {r['train_s']} s.", "",
            (f"Test accuracy (%) on the digits test split; generated = mean of {r['num_generated_per_task']} "
             "generated heads per task; trained = mean of the task's zoo checkpoints; nearest seen = checkpoints of "
             "the training task with the closest code (Hamming; ties averaged; for seen tasks the closest other "
             "one); chance = majority-class rate; linear map = least-squares linear map code -> weights (a "
             "control).")]),
        table=Table(["tasks", "n", "generated", "trained", "nearest seen", "chance", "linear map",
                     "generated − trained (pp)"],
                    [[name, len(block["tasks"]), f"{block['generated_mean']:.2f}", f"{block['trained_mean']:.2f}",
                      f"{block['nearest_seen_mean']:.2f}", f"{block['chance_mean']:.2f}",
                      f"{block['linear_map_mean']:.2f}", f"{block['generated_mean'] - block['trained_mean']:+.2f}"]
                     for name, block in (("held-out (never seen)", h), ("seen", s))], "lrrrrrrr"),
        sections=[*([f"Spread (main run): the {r['num_generated_per_task']} generated heads of one task lie "
                     f"{h['spread']:.2f}x (held-out) and {s['spread']:.2f}x (seen) as far apart as that task's "
                     "checkpoints (median over tasks of the mean pairwise distances)."] if "spread" in h else []),
                  "By number of training tasks (held-out tasks unless noted):", by_size.markdown(),
                  "Held-out tasks, one by one (main run):", per_task.markdown()],
    )

if __name__ == "__main__":
    main()
