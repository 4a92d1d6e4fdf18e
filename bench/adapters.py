"""Benchmark: generated LoRA / DoRA adapters of all-MiniLM-L6-v2 against trained ones.

    python bench/adapters.py [--configs lora:4 dora:4 ...] [--out runs/bench-adapters]
                             [--baselines lora:4] [--num-generated 10] [--set key=value ...]

For each (kind, rank):
1. collects the adapter zoo (``rpgen collect minilm-sentiment``; timed) unless OUT/KIND-rR/zoo exists;
2. trains a generator on it with the ``adapters`` preset, the token size scaled with the rank
   (``TOKENS_PER_RANK`` x r values per token, so every zoo is ~300 tokens long) and the tokens
   denoised per step scaled down by the square root of the token size's growth;
3. generates ``--num-generated`` adapter folders and evaluates them with
   ``rpgen.zoo.minilm_sentiment:evaluate`` (test accuracy, out-of-distribution accuracy,
   novelty; the noise/average/midpoint baselines for the configs in ``--baselines``).

Also measures the base model with a head only (no adapter). Stages already under OUT are reused.
Writes bench/results/adapters.{md,json}, updated after every config; rows of other configs
already there are kept (so configs can run in separate processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, Report, Table, command_line, machine, write_results
from rpgen.formats.listing import list_checkpoints
from rpgen.config import apply_overrides, preset
from rpgen.evaluation import evaluate_run
from rpgen.generation import generate
from rpgen.training import train
from rpgen.zoo import minilm_sentiment as zoo

EVALUATOR = "rpgen.zoo.minilm_sentiment:evaluate"
TOKENS_PER_RANK = 32  # values per token per unit of rank: rank 4 -> 128, 16 -> 512, 64 -> 2048
DEFAULT_CONFIGS = ["lora:4", "dora:4", "lora:16", "dora:16", "lora:64", "dora:64"]


def parse_config(text: str) -> tuple[str, int]:
    kind, _, rank = text.partition(":")
    if kind not in ("lora", "dora") or not rank.isdigit():
        raise SystemExit(f"--configs {text!r}: expected lora:R or dora:R")
    return kind, int(rank)


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def nearest_counts(results: dict) -> dict[str, int]:
    """How many generated models have each training checkpoint as their nearest one."""
    names = [Path(p).name for p in results["checkpoint_files"]]
    counts: dict[str, int] = {}
    for index in results["nearest_checkpoint"]["generated"]:
        counts[names[index]] = counts.get(names[index], 0) + 1
    return dict(sorted(counts.items()))


def final_loss(run_dir: Path) -> float:
    """The generator's last logged training loss."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r][-1]["loss"]


def run_config(kind: str, rank: int, *, out: Path, num_checkpoints: int, num_generated: int, steps: int | None,
               baselines: bool, overrides: list[str], sampler: str | None, sample_steps: int | None) -> dict:
    work = out / f"{kind}-r{rank}"
    zoo_dir, run_dir, gen_dir = work / "zoo", work / "run", work / "generated"
    if not (zoo_dir / zoo.ZOO_INFO).is_file():
        zoo.collect_minilm_sentiment(zoo_dir, rank=rank, dora=kind == "dora", num_checkpoints=num_checkpoints,
                                     overwrite=True)
    info = json.loads((zoo_dir / zoo.ZOO_INFO).read_text())
    token_size = TOKENS_PER_RANK * rank  # the preset's rule (see configs/adapters.toml)
    diffusion_batch = round(preset("adapters").train.diffusion_batch * (preset("adapters").data.token_size
                                                                       / token_size) ** 0.5)
    settings = [f"data.token_size={token_size}", f"train.diffusion_batch={diffusion_batch}",
                *([f"train.steps={steps}"] if steps else []), *overrides]
    if not (run_dir / "generator.safetensors").is_file():
        start = time.perf_counter()
        train(zoo_dir, run_dir, apply_overrides(preset("adapters"), settings), overwrite=True)
        (work / "train_s.txt").write_text(f"{time.perf_counter() - start:.1f}")
    start = time.perf_counter()
    generate(run_dir, gen_dir, num=num_generated, seed=0, overwrite=True, device="cpu", sampler=sampler,
             steps=sample_steps)
    generation = json.loads((gen_dir / "generation.json").read_text())
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    results = evaluate_run(run_dir, gen_dir, EVALUATOR, with_baselines=baselines, seed=0).to_dict()
    evaluate_s = time.perf_counter() - start

    def metric(group: str, key: str) -> list[float]:
        return [m[key] for m in results[f"{group}_metrics"]]

    trained, generated = stats(metric("checkpoint", "accuracy")), stats(metric("generated", "accuracy"))
    run_info = json.loads((run_dir / "run.json").read_text())
    row = {
        "kind": kind, "rank": rank, "params": info["generated_params"],
        "checkpoints": len(list_checkpoints(zoo_dir)), "generated_models": num_generated,
        "trained_mean": trained["mean"], "trained_min": trained["min"], "trained_max": trained["max"],
        "generated_mean": generated["mean"], "generated_min": generated["min"], "generated_max": generated["max"],
        "ood_trained_mean": statistics.fmean(metric("checkpoint", "ood_accuracy")),
        "ood_generated_mean": statistics.fmean(metric("generated", "ood_accuracy")),
        "ood_generated_min": min(metric("generated", "ood_accuracy")),
        "novelty_median": statistics.median(results["novelty"]["generated"]),
        "nearest_checkpoints": nearest_counts(results),
        "iou_median": statistics.median(results["iou"]["generated"]) if results["iou"].get("generated") else None,
        "collect_s": info["collect_s"], "train_s": float((work / "train_s.txt").read_text()),
        "generate_s": round(generate_s, 1), "evaluate_s": round(evaluate_s, 1),
        "settings": settings, "sizing": run_info["sizing"]["chosen"], "final_loss": final_loss(run_dir),
        "sampler": f"{generation['sampler']}-{generation['steps']}",
        "verdict": results["verdict"],
    }
    if baselines:
        row["noise_matched_mean"] = results["summary"]["noise_matched"]["mean"]
        row["average_of_checkpoints"] = results["summary"]["average"]["mean"]
    return row


def write(new_rows: list[dict], head: dict, command: str) -> None:
    """Merge ``new_rows`` into adapters.json (replacing rows of the same kind and rank) and rewrite the report."""
    for row in new_rows:
        row["base_acc"], row["ood_base_acc"] = head["test"], head["ood"]
        row["command"], row["cpu"] = command, machine()["cpu"]  # rows of earlier runs may come from other machines
    path = RESULTS / "adapters.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    done = {(r["kind"], r["rank"]) for r in new_rows}
    rows = sorted([r for r in old if (r["kind"], r["rank"]) not in done] + new_rows,
                  key=lambda r: (r["rank"], r["kind"]))
    write_results("adapters", {"command": command, "evaluator": EVALUATOR, "rows": rows}, render)


def render(data: dict) -> Report:
    rows = data["rows"]
    notes = []
    for r in rows:
        extra = ""
        if "noise_matched_mean" in r:
            extra = (f" Checkpoints + noise at the same distance: {r['noise_matched_mean']:.2f}; average of the "
                     f"checkpoints: {r['average_of_checkpoints']:.2f}.")
        nearest = ", ".join(f"{name} x{n}" for name, n in r["nearest_checkpoints"].items())
        notes.append(f"- **{r['kind']} r{r['rank']}** ({r['checkpoints']} checkpoints, {r['generated_models']} "
                     f"generated; {', '.join(r['settings'])}; from the zoo: {', '.join(r['sizing'])}; final loss "
                     f"{r['final_loss']:.3f}; sampler {r['sampler']}; {r['cpu']}): "
                     f"{r['verdict']}{extra} Nearest checkpoint of the generated adapters: {nearest}.")
    return Report(
        title="Generated LoRA / DoRA adapters (all-MiniLM-L6-v2, word sentiment)",
        commands=list(dict.fromkeys(r["command"] for r in rows)),
        intro=("Test = 1,118 held-out vader lexicon entries; OOD = 730 afinn words absent from the vader lexicon. "
               "Accuracy in %; the base model with a head only (logistic regression on its frozen pooled output) "
               f"scores {rows[0]['base_acc']:.2f} (test) and {rows[0]['ood_base_acc']:.2f} (OOD)."),
        table=Table(["kind", "rank", "generated params", "trained mean / min / max", "generated mean / min / max",
                     "OOD trained", "OOD generated", "novelty", "collect", "train", "generate"],
                    [[r["kind"], r["rank"], f"{r['params']:,}",
                      f"{r['trained_mean']:.2f} / {r['trained_min']:.2f} / {r['trained_max']:.2f}",
                      f"{r['generated_mean']:.2f} / {r['generated_min']:.2f} / {r['generated_max']:.2f}",
                      f"{r['ood_trained_mean']:.2f}", f"{r['ood_generated_mean']:.2f}", f"{r['novelty_median']:.2f}",
                      f"{r['collect_s']:.0f} s", f"{r['train_s']:.0f} s", f"{r['generate_s']:.0f} s"] for r in rows],
                    "lrrllrrrrrr"),
        sections=["Novelty: median distance of a generated adapter to its nearest training checkpoint, in units "
                  "of the checkpoints' own nearest-neighbour distance (1 = as far as checkpoints are from each "
                  "other). Collect, train and generate are wall-clock times (generate: all generated adapters).",
                  "\n".join(notes)],
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--baselines", nargs="*", default=["lora:4"], help="configs evaluated with baselines")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-adapters"))
    parser.add_argument("--num-checkpoints", type=int, default=10)
    parser.add_argument("--num-generated", type=int, default=10)
    parser.add_argument("--steps", type=int, help="generator training steps (default: the preset's, auto)")
    parser.add_argument("--sampler", choices=["ddpm", "ddim", "dpm"], help="default: the run's (DDIM)")
    parser.add_argument("--sample-steps", type=int, help="default: the run's (60)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    configs = [parse_config(c) for c in args.configs]
    with_baselines = {parse_config(c) for c in args.baselines}
    head = zoo.head_only_accuracy()
    rows: list[dict] = []
    for kind, rank in configs:
        print(f"== {kind} rank {rank}", flush=True)
        rows.append(run_config(kind, rank, out=args.out, num_checkpoints=args.num_checkpoints,
                               num_generated=args.num_generated, steps=args.steps,
                               baselines=(kind, rank) in with_baselines, overrides=args.overrides,
                               sampler=args.sampler, sample_steps=args.sample_steps))
        write(rows, head, command_line(["bench/adapters.py", *argv]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "verdict"}), flush=True)
    print(f"wrote {RESULTS / 'adapters.md'}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1:])
