"""Benchmark: does rpgen generate new models or copy its training checkpoints?

    python bench/memorization.py [--out runs/memorization] [--num 100] [--seed 0]

Three experiments on the digits zoo, each evaluated with `rpgen evaluate`'s full report
(baselines, novelty, IoU of misclassified examples):
1. quickstart: 50 checkpoints from one training run (the quickstart zoo and preset);
2. diverse: 50 checkpoints from 10 independent runs (5 each): does the permutation-state embedding
   let one generator produce models of several runs? And what do unseen states produce: a random
   embedding vector, or the midpoint of the embeddings of two states from different runs?
3. count vs diversity: of N generated models, how many are distinct from the checkpoints and from
   each other (first 10 / 30 / N models of experiments 1 and 2)?

Stages whose outputs exist under --out are reused (delete the folder to start over). Writes
bench/results/memorization.md and .json, and copies the reports' plots to bench/results/memorization/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from common import RESULTS, Report, Table, write_results
from rpgen.evaluation import memorization
from rpgen.evaluation.baselines import baseline_label
from rpgen.formats.checkpoints import load_state_dict
from rpgen.config import apply_overrides, load_toml, preset
from rpgen.evaluation import evaluate_run
from rpgen.generation import generate
from rpgen.generation import load_run, write_models
from rpgen.run_dir import CONFIG, GENERATOR, RUN_INFO, TOKENIZER
from rpgen.data.tokenizer import Layout, flatten
from rpgen.training import train
from rpgen.zoo.digits import collect_digits

EVALUATOR = "rpgen.zoo.digits:evaluate"
SUBSETS = (10, 30)
# (name, zoo, training runs in the zoo, settings on top of the quickstart preset)
EXPERIMENTS = (
    ("quickstart", "quickstart", 1, []),
    ("diverse", "diverse", 10, []),
    ("diverse-lr5e-3", "diverse", 10, ["train.lr=5e-3"]),
)


def timed(times: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    times[name] = round(time.perf_counter() - start, 1)
    return value


def build(root: Path, ckpts: Path, *, runs: int, seed: int, num: int, overrides: list[str], times: dict) -> dict:
    """Collect, train, generate ``num`` models and evaluate them (each stage reused when present)."""
    run, gen = root / "run", root / "generated"
    if not ckpts.is_dir():
        timed(times, "collect_s", lambda: collect_digits(ckpts, num_checkpoints=50, seed=seed, runs=runs,
                                                         progress=False))
    if not (run / GENERATOR).is_file():
        config = apply_overrides(preset("quickstart"), [f"train.seed={seed}", *overrides])
        timed(times, "train_s", lambda: train(ckpts, run, config, overwrite=True, progress=False))
    if not (gen / "generation.json").is_file():
        timed(times, "generate_s", lambda: generate(run, gen, num=num, seed=seed, overwrite=True, progress=False))
    return timed(times, "evaluate_s", lambda: evaluate_run(run, gen, EVALUATOR, seed=seed, progress=False).to_dict())


def summary(results: dict) -> dict:
    """The numbers one row of the Markdown tables needs."""
    med = statistics.median
    row = {
        "checkpoints": results["summary"]["checkpoints"],
        "generated": results["summary"]["generated"],
        "novelty_unit": results["novelty_unit"],
        "novelty_median": {k: med(v) for k, v in results["novelty"].items()},
        "baselines": {k: results["summary"][k] for k in results["baselines"]},
        "diversity": {k: v for k, v in results["diversity"].items() if k != "nearest_other_generated"},
        "verdict": results["verdict"],
    }
    if "iou" in results:
        row["iou_median"] = {k: med(v) for k, v in results["iou"].items()}
    return row


def run_of(name: str) -> str:
    """Training run of a diverse-zoo checkpoint file (``r03_0002.safetensors`` -> ``r03``)."""
    return name.split("_", 1)[0]


def state_analysis(root: Path, results: dict) -> dict:
    """For each generated model: does its nearest checkpoint come from the run of its permutation state?"""
    files = json.loads((root / "run" / RUN_INFO).read_text())["checkpoint_files"]
    states = json.loads((root / "generated" / "generation.json").read_text())["permutation_states"]
    nearest = [Path(results["checkpoint_files"][i]).name for i in results["nearest_checkpoint"]["generated"]]
    same = [run_of(files[s]) == run_of(n) for s, n in zip(states, nearest)]
    return {
        "num_models": len(states),
        "nearest_in_state_run": sum(same),
        "runs_of_states": len({run_of(files[s]) for s in states}),
        "runs_of_nearest": len({run_of(n) for n in nearest}),
        "nearest_is_state_checkpoint": sum(files[s] == n for s, n in zip(states, nearest)),
    }


def unseen_states(root: Path, *, seed: int, count: int = 20) -> dict:
    """Generate from permutation-state vectors the generator never saw; evaluate against the zoo.

    The run, loaded, with the first rows of its embedding table replaced in memory: ``count`` random
    vectors (drawn like the table's initialisation) and ``count`` midpoints of two states from
    different runs (the selector ``rpgen generate --mix 0.5`` makes, for chosen pairs).
    """
    run, out = root / "run", root / "unseen"
    files = json.loads((run / RUN_INFO).read_text())["checkpoint_files"]
    loaded = load_run(run)
    table = loaded.model.permutation_state.weight.detach().clone()  # (K, D)
    rng = torch.Generator().manual_seed(seed)
    pairs = []
    while len(pairs) < count:
        i, j = torch.randint(len(files), (2,), generator=rng).tolist()
        if run_of(files[i]) != run_of(files[j]):
            pairs.append((i, j))
    new = torch.cat([0.5 * torch.randn(count, table.shape[1], generator=rng),
                     torch.stack([0.5 * (table[i] + table[j]) for i, j in pairs])])
    with torch.no_grad():
        loaded.model.permutation_state.weight.copy_(torch.cat([new, table[2 * count:]]))
    groups = {}
    for name, states in (("random", list(range(count))), ("midpoint", list(range(count, 2 * count)))):
        gen = out / name
        write_models(loaded, gen, num=count, seed=seed, states=states, overwrite=True, progress=False)
        results = evaluate_run(run, gen, EVALUATOR, with_baselines=False, seed=seed, progress=False).to_dict()
        nearest = [Path(results["checkpoint_files"][i]).name for i in results["nearest_checkpoint"]["generated"]]
        groups[name] = {
            "accuracy": results["summary"]["generated"],
            "novelty_median": statistics.median(results["novelty"]["generated"]),
            "iou_median": statistics.median(results["iou"]["generated"]),
            "runs_of_nearest": len({run_of(n) for n in nearest}),
        }
        if name == "midpoint":
            parents = [{run_of(files[i]), run_of(files[j])} for i, j in pairs]
            groups[name]["nearest_in_a_parent_run"] = sum(run_of(n) in p for n, p in zip(nearest, parents))
    return groups


def count_vs_diversity(root: Path, ckpts: Path, num: int) -> list[dict]:
    """Distinct models among the first n generated models, n in SUBSETS + (num,)."""
    layout = Layout.from_json((root / "run" / TOKENIZER).read_text())
    checkpoints = torch.stack([flatten(load_state_dict(p), layout) for p in sorted(ckpts.iterdir())])
    generated = torch.stack([flatten(load_state_dict(p), layout)
                             for p in sorted((root / "generated").glob("*.safetensors"))])
    scale = memorization.reference(checkpoints).scale
    rows = []
    for n in (*[s for s in SUBSETS if s < num], num):
        novelty = memorization.nearest(generated[:n], checkpoints)[0] / scale
        d = memorization.diversity(generated[:n], novelty, scale=scale)
        rows.append({"num_generated": n, "not_near_copies": d["not_near_copies"],
                     "distinct_models": d["distinct_models"],
                     "median_to_nearest_other_generated": statistics.median(d["nearest_other_generated"])})
    return rows


def fmt(s: dict) -> str:
    return f"{s['mean']:.2f} / {s['min']:.2f} / {s['max']:.2f}"


def title(name: str, entry: dict) -> str:
    zoo = "one training run" if name == "quickstart" else "10 training runs"
    return zoo + (f", {', '.join(entry['overrides'])}" if entry["overrides"] else "")


SAMPLERS = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++"}


def run_settings(root: Path) -> dict:
    """What an experiment's run and generation used, read back from its run directory."""
    config = load_toml(root / "run" / CONFIG)
    generation = json.loads((root / "generated" / "generation.json").read_text())
    return {"train_steps": config.train.steps,
            "num_checkpoints": len(json.loads((root / "run" / RUN_INFO).read_text())["checkpoint_files"]),
            "sampler": generation["sampler"], "sample_steps": generation["steps"]}


def generator_line(experiments: list[tuple[str, dict]]) -> str:
    """The generator settings of the experiments, from their runs (one sentence when they agree)."""
    def parts(run: dict) -> tuple[str, str, str]:
        return (f"{run['train_steps']:,} steps", f"{SAMPLERS[run['sampler']]}-{run['sample_steps']}",
                f"{run['num_checkpoints']} checkpoints")

    settings = {parts(entry["run"]) for _, entry in experiments}
    if len(settings) == 1:
        steps, sampler, checkpoints = settings.pop()
        return (f"Generator: the quickstart preset ({steps}) unless the zoo column says otherwise; {sampler}; "
                f"{checkpoints} per zoo.")
    return "Generator: the quickstart preset unless the zoo column says otherwise; " + "; ".join(
        f"{name}: {', '.join(parts(entry['run']))}" for name, entry in experiments) + "."


def render(data: dict) -> Report:
    experiments = [(name, data[name]) for name, *_ in EXPERIMENTS if name in data]
    runs = {name: runs for name, _, runs, _ in EXPERIMENTS}
    rows = []
    for name, entry in experiments:
        s = entry["summary"]
        groups = [("training checkpoints", "checkpoints", s["checkpoints"]),
                  ("**generated**", "generated", s["generated"])]
        groups += [(baseline_label(k), k, v) for k, v in s["baselines"].items()]
        for label, key, stats in groups:
            iou = s.get("iou_median", {}).get(key)
            rows.append([title(name, entry), label, stats["n"], fmt(stats), f"{s['novelty_median'][key]:.2f}",
                         "-" if iou is None else f"{iou:.2f}"])
    verdicts = []
    for name, entry in experiments:
        final = entry.get("final_loss")
        loss = f" Final training loss {final:.4f}." if final is not None else ""
        verdicts.append(f"Verdict, {title(name, entry)}: {entry['summary']['verdict']}{loss}")
    states = []
    for name, entry in experiments:
        if "states" not in entry:
            continue
        st = entry["states"]
        lines = [f"- {st['num_models']} generated models drew states from {st['runs_of_states']} of the "
                 f"{runs[name]} runs; their nearest checkpoints come from {st['runs_of_nearest']} runs. For "
                 f"{st['nearest_in_state_run']} of {st['num_models']} the nearest checkpoint is in the run of the "
                 f"model's own permutation state (for {st['nearest_is_state_checkpoint']} it is the state's own "
                 "checkpoint)."]
        for group, label in (("random", "a random state vector (never trained)"),
                             ("midpoint", "the midpoint of two trained states from different runs")):
            g = entry["unseen"][group]
            extra = (f"; nearest checkpoint in one of the two parent runs for {g['nearest_in_a_parent_run']} of "
                     f"{g['accuracy']['n']}") if group == "midpoint" else ""
            lines.append(f"- {g['accuracy']['n']} models from {label}: accuracy {fmt(g['accuracy'])}, novelty "
                         f"median {g['novelty_median']:.2f}, IoU median {g['iou_median']:.2f}, nearest checkpoints "
                         f"in {g['runs_of_nearest']} runs{extra}.")
        states += [f"**{title(name, entry)}**", "\n".join(lines)]
    diverse_runs = sorted({runs[name] for name, entry in experiments if "states" in entry})
    diversity = Table(["zoo", "generated", "not near-copies", "distinct",
                       "median distance to nearest other generated (units)"],
                      [[title(name, entry), r["num_generated"], r["not_near_copies"], r["distinct_models"],
                        f"{r['median_to_nearest_other_generated']:.2f}"]
                       for name, entry in experiments for r in entry["count_vs_diversity"]], "lrrrr")
    return Report(
        title="Does rpgen memorise? (digits zoo)",
        intro="\n\n".join([
            generator_line(experiments),
            "Novelty = distance to the nearest training checkpoint in normalised weight space / the median distance "
            "between a checkpoint and its nearest other checkpoint (0 = a copy, 1 = the checkpoints' own spacing). "
            "IoU = overlap of the misclassified test examples of a model and its nearest checkpoint (1 = same "
            "mistakes). Accuracy in %, mean / min / max.",
            "## 1-2. Generated models against checkpoints and baselines"]),
        table=Table(["zoo", "models", "n", "accuracy", "novelty (median)", "IoU (median)"], rows, "llrlrr"),
        sections=[*verdicts,
                  *([f"## 2. Permutation states on the {'/'.join(map(str, diverse_runs))}-run zoo", *states]
                    if states else []),
                  "## 3. Generated-model count vs diversity",
                  f"A model is a near-copy when its novelty is below {memorization.NEAR_COPY}; distinct = groups of "
                  f"generated models more than {memorization.NEAR_COPY} units apart.",
                  diversity.markdown(),
                  "Plots from each experiment's report: `memorization/<experiment>_{metric_hist,novelty,pca}.png` "
                  f"(experiments: {', '.join(name for name, _ in experiments)})."],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/memorization"))
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data: dict = {}
    plots = RESULTS / "memorization"
    plots.mkdir(parents=True, exist_ok=True)
    for name, zoo, runs, overrides in EXPERIMENTS:
        root, ckpts = args.out / name, args.out / zoo / "checkpoints"
        times: dict = {}
        results = build(root, ckpts, runs=runs, seed=args.seed, num=args.num, overrides=overrides, times=times)
        entry = {"summary": summary(results), "times": times, "overrides": overrides, "run": run_settings(root),
                 "count_vs_diversity": count_vs_diversity(root, ckpts, args.num)}
        metrics = (root / "run" / "metrics.jsonl").read_text().splitlines()
        entry["final_loss"] = json.loads(metrics[-1])["loss"]
        if runs > 1:
            entry["states"] = state_analysis(root, results)
            entry["unseen"] = unseen_states(root, seed=args.seed)
        data[name] = entry
        for png in results["plots"]:
            shutil.copy(root / "generated" / png, plots / f"{name}_{png}")
        print(f"{name}: {results['verdict']}", flush=True)

    print(write_results("memorization", data, render))


if __name__ == "__main__":
    main()
