"""Benchmark: unseen tasks on a multimodal zoo, where a regressor cannot cheat.

    python bench/unseen_multimodal.py [--out runs/multimodal] [--num 6] [--modes 3] [--results DIR]

1. Collects ``rpgen collect digits-tasks --modes 3`` (timed; reused when OUT/zoo is complete): the
   1,022 tasks of the digits-tasks zoo, each trained from 3 initialisations of a per-task conv
   block + head, shared across tasks (mode m = the same initialisation for every task).
2. Checks that the modes differ: on the held-out tasks, the accuracy of each mode, of the midpoint
   of modes 0 and 1, and of the mean of all modes (what a regressor that averages them would give).
3. Trains, each with the plain CLI in its own process (wall seconds, peak RSS):
   ``rpg`` = ``rpgen train OUT/zoo/train --out RUN`` (the folder declares the modes as runs, so the
   generator takes a state per mode beside the code); ``rpg-condition-only`` adds
   ``--set data.states=none`` (the ablation: the code alone); ``mse`` and ``mse-condition-only`` the
   same with ``model.method=mse`` (no diffusion).
4. Generates ``--num`` models for each of the 30 held-out and 20 seen tasks (states drawn at random
   with seed 0) and measures their test accuracy against: trained (the task's checkpoints, all
   modes), nearest seen task (Hamming), chance, and a least-squares linear map code -> weights
   fitted on every training checkpoint.
5. Mode coverage: the nearest trained mode of each generated model of a held-out task (distance
   to that task's checkpoints of each mode, relative to the distance between its modes), how many
   modes each task's models reach, and how many models are broken averages (accuracy more than
   5 pp below the task's worst trained checkpoint).

6. Sampling temperature: the ``--temperature-rows`` sampled again at each of ``--temperatures``
   (``rpgen generate --temperature``), and for every row the spread of the models of one task and
   one state, relative to that task's checkpoints of the matching mode.

Writes RESULTS/NAME.{md,json} (RESULTS = bench/results unless --results; NAME = unseen_multimodal
unless --name).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import statistics
import tomllib
from pathlib import Path

import torch
from safetensors.torch import load_file

from common import RESULTS, Report, Table, child, cli, flat, nearest_codes, spread_ratio, write_results
from rpgen.evaluation.baselines import LinearMap, average
from rpgen.formats.checkpoints import load_state_dict
from rpgen.generation import generate
from rpgen.zoo import digits_tasks as zoo
from rpgen.zoo.digits import load_split

NUM_SEEN_EVAL = 20
BROKEN_PP = 5.0  # a model more than this below its task's worst trained checkpoint is broken
ROWS = {  # name -> --set settings on top of the plain command
    "rpg": [],
    "rpg-condition-only": ["data.states=none"],
    "mse": ["model.method=mse"],
    "mse-condition-only": ["model.method=mse", "data.states=none"],
}


class TasksZoo:
    """A collected multimodal digits-tasks zoo: file lookup and accuracy of any models on given tasks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = zoo.load_manifest(folder)
        self.modes = self.manifest["modes"]
        self.per_mode = self.manifest["num_checkpoints"]
        self.train_codes = [c for c, t in self.manifest["tasks"].items() if t["split"] == zoo.TRAIN_DIR]

    def checkpoints(self, code: str, mode: int | None = None) -> list[dict[str, torch.Tensor]]:
        modes = range(self.modes) if mode is None else [mode]
        return [load_file(zoo.checkpoint_path(self.folder, code, k, m)) for m in modes for k in range(self.per_mode)]

    def accuracy(self, models: list[dict[str, torch.Tensor]], codes: list[str]) -> list[float]:
        return zoo.batch_accuracy(models, codes, zoo_dir=self.folder)

    def trained_by_mode(self, code: str) -> list[float]:
        """Mean accuracy of each mode's checkpoints (manifest order: mode by mode)."""
        acc = self.manifest["tasks"][code]["accuracy"]
        return [statistics.mean(acc[m * self.per_mode:(m + 1) * self.per_mode]) for m in range(self.modes)]


def mode_check(z: TasksZoo, codes: list[str]) -> dict:
    """Accuracy of each mode, of the midpoint of every pair of modes, and of the mean of all modes
    (each task's last checkpoints)."""
    last = z.per_mode - 1
    ends = {c: [load_file(zoo.checkpoint_path(z.folder, c, last, m)) for m in range(z.modes)] for c in codes}
    means = [average(e) for e in ends.values()]
    per_mode = [statistics.mean(z.accuracy([ends[c][m] for c in codes], codes)) for m in range(z.modes)]
    pairs = {}
    for a, b in itertools.combinations(range(z.modes), 2):
        midpoints = [average([e[a], e[b]]) for e in ends.values()]
        pairs[f"{a}-{b}"] = round(statistics.mean(z.accuracy(midpoints, codes)), 2)
    return {"tasks": len(codes), "mode_means": [round(a, 2) for a in per_mode],
            "midpoint_0_1_mean": pairs["0-1"], "midpoint_by_pair_mean": pairs,
            "mean_of_modes_mean": round(statistics.mean(z.accuracy(means, codes)), 2)}


def head_only_check(z: TasksZoo, heldout: list[str], codes: list[str] | None = None) -> dict:
    """Why the zoo trains a conv block per task: the same modes with heads only (the single-mode
    zoo's :class:`TaskHead` on the frozen features), every task trained in memory from each mode's
    initialisation (its last checkpoint of one epoch): the midpoint of modes 0 and 1 and the mean of
    all modes on the held-out tasks, and a least-squares map code -> weights fitted on the seen
    tasks' heads of every mode (``codes``: the tasks to train, default all 1,022)."""
    x_train, y_train, _, _ = load_split()
    features = zoo.extract_features(load_state_dict(z.folder / zoo.EXTRACTOR), x_train)
    codes = zoo.all_codes() if codes is None else codes
    heads = [{} for _ in range(z.modes)]  # mode -> code -> state dict
    for mode in range(z.modes):
        for i in range(0, len(codes), zoo.CHUNK_TASKS):
            chunk = codes[i:i + zoo.CHUNK_TASKS]
            for code, states in zip(chunk, zoo.train_heads(chunk, features, y_train, seed=z.manifest["seed"],
                                                             num_checkpoints=1, mode=mode)):
                heads[mode][code] = states[-1]
    ends = [[heads[m][c] for m in range(z.modes)] for c in heldout]
    midpoints = [average([e[0], e[1]]) for e in ends]
    means = [average(e) for e in ends]
    linear = LinearMap((zoo.code_bits(c), heads[m][c]) for m in range(z.modes) for c in codes if c not in zoo.HELDOUT)
    mapped = [linear.model(zoo.code_bits(c)) for c in heldout]
    per_mode = [statistics.mean(z.accuracy([e[m] for e in ends], heldout)) for m in range(z.modes)]
    return {"tasks": len(heldout), "mode_means": [round(a, 2) for a in per_mode],
            "midpoint_0_1_mean": round(statistics.mean(z.accuracy(midpoints, heldout)), 2),
            "mean_of_modes_mean": round(statistics.mean(z.accuracy(means, heldout)), 2),
            "linear_map_mean": round(statistics.mean(z.accuracy(mapped, heldout)), 2)}


MODE_MAP_DEGREES = (1, 2, 3)


def mode_maps(z: TasksZoo, splits: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Regressors given the mode, as the state gives it to the generator: for each mode, a least-squares
    polynomial map code -> weights of degree 1, 2 and 3 fitted on that mode's training checkpoints; the
    mean accuracy of each task's one model per mode -> {split: {degree: mean}}."""
    out: dict[str, dict[str, float]] = {split: {} for split in splits}
    examples = [[(zoo.code_bits(c), s) for c in z.train_codes for s in z.checkpoints(c, m)]
                for m in range(z.modes)]  # read once
    for degree in MODE_MAP_DEGREES:
        maps = [LinearMap(mode_examples, degree) for mode_examples in examples]
        for split, codes in splits.items():
            models = [f.model(zoo.code_bits(c)) for c in codes for f in maps]
            out[split][str(degree)] = round(statistics.mean(z.accuracy(models, [c for c in codes for _ in maps])), 2)
    return out


def nearest_seen(z: TasksZoo, code: str) -> float:
    models = [m for c in nearest_codes(code, z.train_codes) for m in z.checkpoints(c)]
    return statistics.mean(z.accuracy(models, [code] * len(models)))


def generated(run: Path, codes: list[str], num: int, out: Path, temperature: float | None = None
              ) -> tuple[list[list[dict]], list[list[int]]]:
    """``num`` generated models per code (states drawn with seed 0) and each one's state (None without states)."""
    if not (out / "generation.json").is_file():
        generate(run, out, num=num, conditions=[zoo.code_bits(c) for c in codes], seed=0, overwrite=True,
                 progress=False, device="cpu", temperature=temperature)
    record = json.loads((out / "generation.json").read_text())
    files = sorted(out.glob("*.safetensors"))
    states = record.get("permutation_states") or [None] * len(files)
    models = [load_file(f) for f in files]
    return ([models[i * num:(i + 1) * num] for i in range(len(codes))],
            [states[i * num:(i + 1) * num] for i in range(len(codes))])


def coverage(z: TasksZoo, codes: list[str], models: list[list[dict]], states: list[list],
             accuracy: list[list[float]]) -> dict:
    """Nearest trained mode of every generated model, relative distances, broken averages."""
    hits, modes_reached, broken, relative, state_match = [0] * z.modes, [], 0, [], []
    for code, group, drawn, acc in zip(codes, models, states, accuracy):
        by_mode = [torch.stack([flat(s) for s in z.checkpoints(code, m)]) for m in range(z.modes)]  # (per_mode, P)
        centres = torch.stack([b.mean(0) for b in by_mode])  # (modes, P)
        between = torch.cdist(centres, centres)[torch.triu_indices(z.modes, z.modes, 1).unbind()].mean()
        worst = min(z.manifest["tasks"][code]["accuracy"])
        reached = set()
        for model, state, a in zip(group, drawn, acc):
            d = torch.stack([torch.cdist(flat(model)[None], b).min() for b in by_mode])  # (modes,)
            mode = int(d.argmin())
            hits[mode] += 1
            reached.add(mode)
            relative.append(float(d.min() / between))
            broken += a < worst - BROKEN_PP
            if state is not None:
                state_match.append(state == mode)
        modes_reached.append(len(reached))
    return {"models": sum(hits), "nearest_mode_counts": hits,
            "tasks_by_modes_reached": {str(k): modes_reached.count(k) for k in range(1, z.modes + 1)},
            "median_distance_to_nearest_mode_over_between_modes": round(statistics.median(relative), 3),
            "broken": int(broken), "broken_rule": f"accuracy < the task's worst trained checkpoint - {BROKEN_PP:g} pp",
            "state_is_nearest_mode": None if not state_match else sum(state_match)}


def spread(z: TasksZoo, codes: list[str], models: list[list[dict]], states: list[list]) -> float | None:
    """How far apart a task's generated models of one state are, relative to that task's checkpoints
    of the matching mode: the median over (task, state) of mean pairwise distances, generated over
    trained (1: as diverse as the zoo within a mode; 0: one model per state). None without states."""
    ratios = []
    for code, group, drawn in zip(codes, models, states):
        for state in {s for s in drawn if s is not None}:
            same = [m for m, s in zip(group, drawn) if s == state]
            if len(same) > 1:
                ratios.append(spread_ratio(same, z.checkpoints(code, state)))
    return round(statistics.median(ratios), 3) if ratios else None


def evaluate_row(z: TasksZoo, run: Path, codes: list[str], num: int, out: Path,
                 temperature: float | None = None) -> dict:
    models, states = generated(run, codes, num, out, temperature)
    flat_acc = z.accuracy([m for g in models for m in g], [c for c in codes for _ in range(num)])
    acc = [flat_acc[i * num:(i + 1) * num] for i in range(len(codes))]
    return {"mean": round(statistics.mean(flat_acc), 2), "min": round(min(flat_acc), 2),
            "per_task": [round(statistics.mean(a), 2) for a in acc], "models": models, "states": states, "acc": acc,
            "spread": spread(z, codes, models, states)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/multimodal"))
    parser.add_argument("--num", type=int, default=6, help="generated models per task")
    parser.add_argument("--modes", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    parser.add_argument("--row", dest="extra_rows", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="an extra row: the plain command with these --set settings (e.g. "
                             "rpg-d128:model.d_model=128,train.steps=6000)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra --set for every training (smoke runs; the results say so)")
    parser.add_argument("--temperatures", default="1,0.5,0",
                        help="comma-separated sampling temperatures (rpgen generate --temperature) to evaluate "
                             "the --temperature-rows at, beside the run's own (sample.temperature)")
    parser.add_argument("--temperature-rows", default="rpg", help="comma-separated rows to sample colder")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--name", default="unseen_multimodal",
                        help="results file name (a subset of rows on another collect of the zoo gets its own)")
    parser.add_argument("--collect-seconds", type=float,
                        help="wall seconds of the collect that built an existing OUT/zoo (recorded as measured "
                             "outside this run)")
    args = parser.parse_args()
    out = args.out.resolve()

    zoo_dir, collect_s = out / "zoo", args.collect_seconds
    if not (zoo_dir / zoo.MANIFEST).is_file():
        print("collecting the zoo", flush=True)
        collect_s, _ = child(cli("collect", "digits-tasks", "--modes", args.modes, "--out", zoo_dir, "--overwrite"),
                             out / "logs" / "collect.log")
        collect_s = round(collect_s, 1)
    z = TasksZoo(zoo_dir)
    heldout = list(zoo.HELDOUT)
    order = z.train_codes[:]
    random.Random(0).shuffle(order)
    seen = sorted(order[:NUM_SEEN_EVAL])
    modes = {"heldout": mode_check(z, heldout), "seen": mode_check(z, seen),
             "heads_only_heldout": head_only_check(z, heldout)}
    print(f"modes: {modes}", flush=True)

    rows_settings = {name: ROWS[name] for name in args.rows.split(",")}
    for extra in args.extra_rows:
        name, _, settings = extra.partition(":")
        rows_settings[name] = [s for s in re.split(r",(?=\w+\.\w+=)", settings) if s]  # commas inside a list stay
    trained, rows = {}, {}
    for name, settings in rows_settings.items():
        run = out / "runs" / name
        if not (run / "generator.safetensors").is_file():
            print(f"training {name}", flush=True)
            sets = [x for s in settings + args.overrides for x in ("--set", s)]
            seconds, peak = child(cli("train", zoo_dir / zoo.TRAIN_DIR, "--out", run, "--overwrite", *sets),
                                  out / "logs" / f"{name}.train.log")
            (run / "bench_train.json").write_text(f'{{"train_s": {seconds:.1f}, "train_peak_rss_gb": {peak:.3f}}}\n')
        config = tomllib.loads((run / "config.toml").read_text())
        trained[name] = {**json.loads((run / "bench_train.json").read_text()), "settings": settings,
                         "method": config["model"]["method"], "states": config["data"]["states"],
                         "d_model": config["model"]["d_model"], "lr": config["train"]["lr"],
                         "steps": config["train"]["steps"]}
        if config["model"]["method"] != "mse":  # what the row's models were sampled with
            trained[name].update(temperature=config["sample"]["temperature"], sampler=config["sample"]["sampler"],
                                 sample_steps=config["sample"]["steps"])
        rows[name] = {split: evaluate_row(z, run, codes, args.num, out / "gen" / f"{name}-{split}")
                      for split, codes in (("heldout", heldout), ("seen", seen))}
        print(f"{name}: held-out {rows[name]['heldout']['mean']}, seen {rows[name]['seen']['mean']}", flush=True)

    cold = {}  # row -> temperature -> split -> evaluation
    temperatures = [float(t) for t in args.temperatures.split(",") if t]
    for name in [n for n in args.temperature_rows.split(",") if n in rows and temperatures]:
        others = [t for t in temperatures if t != trained[name].get("temperature", 1.0)]  # its own is the row
        cold[name] = {f"{t:g}": {split: evaluate_row(z, out / "runs" / name, codes, args.num,
                                                    out / "gen" / f"{name}-t{t:g}-{split}", t)
                                 for split, codes in (("heldout", heldout), ("seen", seen))}
                      for t in others}
        print(f"{name} at temperatures {others}: "
              f"{[cold[name][f'{t:g}']['heldout']['mean'] for t in others]}", flush=True)

    linear = LinearMap((zoo.code_bits(c), s) for c in z.train_codes for s in z.checkpoints(c))
    given_mode = mode_maps(z, {"heldout": heldout, "seen": seen})
    result: dict = {"collect_s": collect_s, "modes_per_task": z.modes, "checkpoints_per_mode": z.per_mode,
                    "num_generated_per_task": args.num, "overrides": args.overrides, "mode_check": modes}
    for split, codes in (("heldout", heldout), ("seen", seen)):
        trained_acc = [statistics.mean(z.manifest["tasks"][c]["accuracy"]) for c in codes]
        block = {"tasks": codes,
                 "trained_mean": round(statistics.mean(trained_acc), 2),
                 "trained_by_mode_mean": [round(statistics.mean(z.trained_by_mode(c)[m] for c in codes), 2)
                                          for m in range(z.modes)],
                 "nearest_seen_mean": round(statistics.mean(nearest_seen(z, c) for c in codes), 2),
                 "chance_mean": round(statistics.mean(z.manifest["tasks"][c]["chance"] for c in codes), 2),
                 "linear_map_mean": round(statistics.mean(
                     z.accuracy([linear.model(zoo.code_bits(c)) for c in codes], codes)), 2),
                 "mode_map_means": given_mode[split]}
        for name, row in rows.items():
            key = name.replace("-", "_")
            block[f"{key}_mean"], block[f"{key}_min"] = row[split]["mean"], row[split]["min"]
        if "rpg" in rows:
            block["generated_mean"], block["generated_min"] = rows["rpg"][split]["mean"], rows["rpg"][split]["min"]
        if "mse" in rows:
            block["mse_mean"] = rows["mse"][split]["mean"]
        block["coverage"] = {name: coverage(z, codes, row[split]["models"], row[split]["states"], row[split]["acc"])
                             for name, row in rows.items()}
        block["spread"] = {name: row[split]["spread"] for name, row in rows.items()}
        block["temperature"] = {
            name: {t: {"mean": e[split]["mean"], "min": e[split]["min"], "spread": e[split]["spread"],
                       "coverage": coverage(z, codes, e[split]["models"], e[split]["states"], e[split]["acc"])}
                   for t, e in by_t.items()}
            for name, by_t in cold.items()}
        result[split] = block
    result["train"] = trained
    print(write_results(args.name, result, render, results=args.results))


def timed_by(train: dict) -> dict[str, list[str]]:
    """How rows trained outside this run were timed -> those rows (one footnote per way)."""
    notes: dict[str, list[str]] = {}
    for name, row in train.items():
        if row.get("timed_by"):
            notes.setdefault(row["timed_by"], []).append(name)
    return notes


def seed_rows(train: dict) -> list[str]:
    """Rows that are the rpg row again with another seed (``train.seed=...`` only)."""
    return [n for n, row in train.items()
            if n != "rpg" and row["settings"] and all(x.startswith("train.seed=") for x in row["settings"])]


def temperature_intro(r: dict) -> str:
    rows = [row for row in r["train"].values() if "temperature" in row]
    if not rows:  # results from before sample.temperature = "auto"
        return ("The same generators, sampled from colder noise (the run's sampler, ddim with 60 steps; the noise "
                "it starts from scaled by the temperature; 1 is the default).")
    samplers = sorted({f"{row['sampler']} with {row['sample_steps']} steps" for row in rows})
    temperatures = sorted({f"{row['temperature']:g}" for row in rows  # what "auto" gave the plain commands
                           if not any(x.startswith("sample.temperature=") for x in row["settings"])})
    return (f"The same generators, sampled from noise of other temperatures (the run's sampler, {', '.join(samplers)}; "
            "the noise it starts from scaled by the temperature). The rows above use each run's own "
            f"`sample.temperature`, which `rpgen train` sets to {' / '.join(temperatures)} for a conditional run "
            "(\"auto\").")


def render(r: dict) -> Report:
    h, s = r["heldout"], r["seen"]
    names = list(r["train"])
    mc = r["mode_check"]["heldout"]

    def cell(block: dict, key: str) -> str:
        return f"{block[key]:.2f}" if key in block else "—"

    table = Table(["tasks", "n", "generated (rpg)", "trained", "nearest seen", "chance", "linear map", "mse",
                   "generated − trained (pp)"],
                  [[name, len(b["tasks"]), cell(b, "generated_mean"), cell(b, "trained_mean"),
                    cell(b, "nearest_seen_mean"), cell(b, "chance_mean"), cell(b, "linear_map_mean"),
                    cell(b, "mse_mean"),
                    f"{b['generated_mean'] - b['trained_mean']:+.2f}" if "generated_mean" in b else "—"]
                   for name, b in (("held-out (never seen)", h), ("seen", s))], "lrrrrrrrr")
    spreads = "spread" in h  # results from before the spread was measured have none
    sampled = any("temperature" in row for row in r["train"].values())  # older results: all at temperature 1
    headers = ["row", "--set", "states", "d_model, lr, steps", *(["temperature"] if sampled else []),
               "held-out mean / min", "seen mean / min",
               "nearest mode counts (held-out)", "tasks reaching 1/2/3 modes", "broken (held-out)",
               "state = nearest mode", *(["spread (held-out)"] if spreads else []), "train s", "peak RSS GB"]
    ablation = Table(headers,
                     [[n, " ".join(r["train"][n]["settings"]) or "—",
                       "none (code only)" if r["train"][n]["states"] == "none" else "one per mode, beside the code",
                       f"{r['train'][n]['d_model']}, {r['train'][n]['lr']:g}, {r['train'][n]['steps']}",
                       *([f"{r['train'][n]['temperature']:g}" if "temperature" in r["train"][n] else "—"]
                         if sampled else []),
                       f"{h[n.replace('-', '_') + '_mean']:.2f} / {h[n.replace('-', '_') + '_min']:.2f}",
                       f"{s[n.replace('-', '_') + '_mean']:.2f} / {s[n.replace('-', '_') + '_min']:.2f}",
                       " / ".join(map(str, h["coverage"][n]["nearest_mode_counts"])),
                       " / ".join(str(v) for v in h["coverage"][n]["tasks_by_modes_reached"].values()),
                       f"{h['coverage'][n]['broken']} of {h['coverage'][n]['models']}",
                       "—" if h["coverage"][n]["state_is_nearest_mode"] is None
                       else f"{h['coverage'][n]['state_is_nearest_mode']} of {h['coverage'][n]['models']}",
                       *(["—" if h["spread"][n] is None else f"{h['spread'][n]:.2f}"] if spreads else []),
                       f"{r['train'][n]['train_s']:.0f}" + ("*" if r["train"][n].get("timed_by") else ""),
                       "—" if r["train"][n]["train_peak_rss_gb"] is None
                       else f"{r['train'][n]['train_peak_rss_gb']:.2f}"]
                      for n in names], "llll" + "r" * (len(headers) - 4))
    cold_rows, cold_bars = [], []
    for n, by_t in h.get("temperature", {}).items():
        own = f"{r['train'][n].get('temperature', 1):g}"  # the row's own temperature (sample.temperature)
        default = {"mean": h[n.replace("-", "_") + "_mean"], "min": h[n.replace("-", "_") + "_min"],
                   "spread": h["spread"][n], "coverage": h["coverage"][n]}
        seen = {own: {"mean": s[n.replace("-", "_") + "_mean"], "min": s[n.replace("-", "_") + "_min"]},
                **s["temperature"][n]}
        for t, e in sorted({own: default, **by_t}.items(), key=lambda te: -float(te[0])):
            cov = e["coverage"]
            cold_rows.append([n, t, f"{e['mean']:.2f} / {e['min']:.2f}",
                              f"{seen[t]['mean']:.2f} / {seen[t]['min']:.2f}",
                              f"{e['mean'] - h['trained_mean']:+.2f}", f"{cov['broken']} of {cov['models']}",
                              "—" if cov["state_is_nearest_mode"] is None
                              else f"{cov['state_is_nearest_mode']} of {cov['models']}",
                              "—" if e["spread"] is None else f"{e['spread']:.2f}"])
        for t, e in by_t.items():
            for split, b, mean in (("held-out", h, e["mean"]), ("seen", s, seen[t]["mean"])):
                gap = mean - b["trained_mean"]
                leads = ", ".join(f"{other.removesuffix('_mean').replace('_', ' ')} {mean - b[other]:+.2f} pp"
                                  for other in ("linear_map_mean", "mse_mean", "mse_condition_only_mean") if other in b)
                cold_bars.append(f"- {n} at temperature {t}, {split}: {mean:.2f} vs trained {b['trained_mean']:.2f} "
                                 f"({gap:+.2f} pp; within 3 pp: **{'met' if gap >= -3 else 'not met'}**); "
                                 f"above {leads}")
    temperature_table = Table(["row", "temperature", "held-out mean / min", "seen mean / min",
                               "held-out − trained (pp)", "broken (held-out)", "state = nearest mode",
                               "spread (held-out)"],
                              cold_rows, "lrrrrrrr")
    bars = []
    if "generated_mean" in h:
        for split, b in (("held-out", h), ("seen", s)):
            gap = b["generated_mean"] - b["trained_mean"]
            at = (f" (temperature {r['train']['rpg']['temperature']:g}, the default)"
                  if "temperature" in r["train"].get("rpg", {}) else "")
            bars.append(f"- {split}: generated{at} {b['generated_mean']:.2f} vs trained {b['trained_mean']:.2f} "
                        f"({gap:+.2f} pp; bar within 3 pp: **{'met' if gap >= -3 else 'not met'}**)")
            if "rpg_condition_only_mean" in b:
                bars.append(f"  - the state (ablation): with it {b['generated_mean']:.2f}, code only "
                            f"{b['rpg_condition_only_mean']:.2f} "
                            f"({b['generated_mean'] - b['rpg_condition_only_mean']:+.2f} pp)")
            for n in seed_rows(r["train"]):
                mean = b[n.replace("-", "_") + "_mean"]
                bars.append(f"  - {n} (`{' '.join(r['train'][n]['settings'])}`): {mean:.2f} "
                            f"({mean - b['trained_mean']:+.2f} pp; within 3 pp: "
                            f"**{'met' if mean - b['trained_mean'] >= -3 else 'not met'}**)")
            for other in ("linear_map_mean", "mse_mean", "mse_condition_only_mean"):
                if other in b:
                    lead = b["generated_mean"] - b[other]
                    bars.append(f"  - above {other.removesuffix('_mean').replace('_', ' ')} ({b[other]:.2f}) by "
                                f"{lead:+.2f} pp (bar >= 10 pp: **{'met' if lead >= 10 else 'not met'}**)")
    intro = "\n".join([
        f"Zoo: `rpgen collect digits-tasks --modes {r['modes_per_task']}` "
        + (f"({r['collect_s']:.0f} s)" if r["collect_s"] else "(reused; not timed)")
        + f": every task trained from {r['modes_per_task']} initialisations of its conv block + head "
          f"(shared across tasks), {r['checkpoints_per_mode']} checkpoints each.",
        (f"Extra settings for every training (not the plain command): `{' '.join(r['overrides'])}`."
         if r["overrides"] else "Every row is the plain `rpgen train` command (plus the row's `--set`)."),
        "",
        "The modes differ (held-out tasks, last checkpoints): modes "
        f"{' / '.join(f'{a:.2f}' for a in mc['mode_means'])}, "
        f"midpoints of two modes {' / '.join(f'{a:.2f} ({pair})' for pair, a in mc['midpoint_by_pair_mean'].items())}, "
        f"mean of all modes {mc['mean_of_modes_mean']:.2f}.",
        *([] if "heads_only_heldout" not in r["mode_check"] else [
            "", "Heads alone would not make such modes (the same 3 initialisations of the single-mode zoo's head on "
            "the frozen features, one epoch each, trained in memory): held-out modes "
            + " / ".join(f"{a:.2f}" for a in r["mode_check"]["heads_only_heldout"]["mode_means"])
            + f", midpoint {r['mode_check']['heads_only_heldout']['midpoint_0_1_mean']:.2f}, mean of all modes "
            f"{r['mode_check']['heads_only_heldout']['mean_of_modes_mean']:.2f}, linear map code -> weights "
            f"{r['mode_check']['heads_only_heldout']['linear_map_mean']:.2f}."]),
        "",
        f"Test accuracy (%) on the digits test split; generated = {r['num_generated_per_task']} models per task, "
        "states drawn at random (seed 0); trained = the task's checkpoints, all modes; nearest seen = checkpoints "
        "of the training task with the closest code; linear map = least squares code -> weights over every "
        "training checkpoint; mse = the no-diffusion ablation through the plain command (it takes the state too).",
    ])
    mode_map_sections = []
    if "mode_map_means" in h:
        maps = Table(["map code -> weights, per mode", "held-out", "seen", "generated − map, held-out (pp)"],
                     [[f"degree {d} ({'linear' if d == '1' else 'products of up to ' + d + ' bits'})",
                       f"{a:.2f}", f"{s['mode_map_means'][d]:.2f}",
                       f"{h['generated_mean'] - a:+.2f}" if "generated_mean" in h else "—"]
                      for d, a in h["mode_map_means"].items()], "lrrr")
        best = max(h["mode_map_means"], key=h["mode_map_means"].get)
        mode_map_sections = [
            "## Regressors given the mode",
            "What a regressor does when it is told the mode, as the state tells the generator: for each mode, "
            "least squares from the code's monomials to the weights of that mode's training checkpoints; each task "
            "gets one model per mode. The linear map above is fitted across modes and averages them.",
            maps.markdown(),
            *([f"The best of them (degree {best}) scores {h['mode_map_means'][best]:.2f} on held-out tasks, "
               f"{h['generated_mean'] - h['mode_map_means'][best]:+.2f} pp from the generator: given the mode, the "
               "generator's lead over a regressor is "
               + ("gone." if h["generated_mean"] <= h["mode_map_means"][best] else
                  f"{h['generated_mean'] - h['mode_map_means'][best]:.2f} pp.")] if "generated_mean" in h else [])]
    title = "Unseen tasks on a multimodal zoo" + (", and the sampling temperature" if cold_rows else "")
    return Report(title=title, intro=intro, table=table,
                  sections=["## Rows: condition + state vs condition only, diffusion vs mse", ablation.markdown(),
                            *[f"\\* {', '.join(rows)}: {note}" for note, rows in timed_by(r["train"]).items()],
                            "Nearest mode: the mode whose checkpoints of that task are closest in weights; a "
                            "model near none of them and below the task's worst trained checkpoint by more than "
                            f"{BROKEN_PP:g} pp counts as broken.",
                            *(["Spread: the median over (task, state) of the mean distance between generated "
                               "models of one task and one state, over the mean distance between that task's "
                               "checkpoints of the matching mode (1: as diverse as the zoo within a mode; 0: one "
                               "model per state)."] if spreads else []),
                            *mode_map_sections,
                            *(["## Sampling temperature (`rpgen generate --temperature`)",
                               temperature_intro(r),
                               temperature_table.markdown()] if cold_rows else []),
                            "## Bars (computed from the numbers above)", "\n".join(bars) or "—",
                            *([f"### At {'other' if sampled else 'lower'} temperatures", "\n".join(cold_bars)]
                              if cold_bars else [])])


if __name__ == "__main__":
    main()
