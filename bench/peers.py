"""Benchmark: RPG against its peers and ablations, side by side.

    python bench/peers.py rows [--out runs/peers] [--only NAME ...]   # accuracy/novelty/time/memory rows
    python bench/peers.py memory [--out runs/peers]                    # training memory vs parameter count:
                                                                       # bench/results/peers_memory.{md,json,png}
    python bench/peers.py report                                       # bench/results/peers.{md,json,png}

Every training and generation runs in a fresh subprocess (``worker``), so its peak resident
memory (VmHWM) is its own. The parent polls the worker's memory and kills it above
``--max-rss-gb`` (the machine is shared). Stages whose results exist under --out are reused;
``report`` only reads them.

Rows (digits zoos): RPG with the quickstart preset (2,000 steps; the trained runs of
bench/memorization.py are reused when --reuse points at them: their training time comes from
their metrics.jsonl and their peak memory from 50 steps of the same config in a fresh process),
p-diff, and ablations at a common shorter budget (``ABLATION_STEPS``): backbones, token sizes and
the no-diffusion MSE head. Memory: a few training steps of each method on zoos of
random-initialised MLPs of growing width, until a method exceeds the memory or time limit.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import common
from peers_report import (
    ABLATION_STEPS,
    MEMORY_CHECKPOINTS,
    MEMORY_METHODS,
    MEMORY_SIZES,
    MEMORY_STEPS,
    PDIFF,
    memory_report,
    report,
)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
EVALUATOR = "rpgen.zoo.digits:evaluate"
NUM_GENERATED = 20
ZOOS = {"quickstart": "runs/memorization/quickstart",  # bench/memorization.py's default --out
        "diverse": "runs/memorization/diverse"}

# name -> (method label, zoo, overrides on the quickstart preset, reuse the memorization run)
ROWS: dict[str, tuple[str, str, list[str], bool]] = {
    "rpg-quickstart": ("rpg (mamba, token 64, 2000 steps)", "quickstart", [], True),
    "rpg-diverse": ("rpg (mamba, token 64, 2000 steps)", "diverse", [], True),
    "pdiff-quickstart": ("pdiff (1500 autoencoder + 1000 DDPM steps)", "quickstart", PDIFF, False),
    "pdiff-diverse": ("pdiff (1500 autoencoder + 1000 DDPM steps)", "diverse", PDIFF, False),
    "mse-diverse": (f"mse (mamba + linear head), {ABLATION_STEPS} steps", "diverse",
                    ["model.method=mse", f"train.steps={ABLATION_STEPS}"], False),
}
ABLATIONS = {
    "mamba": ["model.backbone=mamba"],
    "lstm": ["model.backbone=lstm"],
    "transformer": ["model.backbone=transformer"],
    "gmlp": ["model.backbone=gmlp"],
    "none": ["model.backbone=none"],
    "token32": ["data.token_size=32"],
    "token128": ["data.token_size=128"],
    "mse": ["model.method=mse"],
}
for _name, _over in ABLATIONS.items():
    _label = {"mse": "mse (mamba + linear head)", "token32": "rpg mamba, token 32",
              "token128": "rpg mamba, token 128"}.get(_name, f"rpg {_name}, token 64")
    ROWS[f"ablation-{_name}"] = (f"{_label}, {ABLATION_STEPS} steps", "quickstart",
                                 [*_over, f"train.steps={ABLATION_STEPS}"], False)

# ----------------------------------------------------------------------------- worker side

def worker(spec: dict) -> dict:
    """Train (or reuse) and optionally generate; return times and peak memory."""
    from rpgen.config import apply_overrides, preset
    from rpgen.generation import generate
    from rpgen.training import train

    config = apply_overrides(preset("quickstart"), spec["overrides"])
    out: dict = {}
    start = time.perf_counter()
    if spec.get("stop_after"):  # memory of a reused run: a few steps of the same config
        train(spec["ckpts"], spec["run"], config, overwrite=True, progress=False, stop_after=spec["stop_after"])
    else:
        train(spec["ckpts"], spec["run"], config, overwrite=True, progress=False)
    out["train_s"] = round(time.perf_counter() - start, 2)
    out["train_peak_rss_gb"] = round(common.peak_rss_gb(), 3)
    metrics = [json.loads(line) for line in (Path(spec["run"]) / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in metrics if m.get("stage") == metrics[0].get("stage")]  # the first stage (p-diff has two)
    if len(metrics) >= 2:
        out["step_s"] = round((metrics[-1]["elapsed_s"] - metrics[0]["elapsed_s"]) / (len(metrics) - 1), 3)
    if spec.get("generate"):
        run = spec.get("generate_from", spec["run"])
        start = time.perf_counter()
        generate(run, spec["gen"], num=spec["num"], seed=0, overwrite=True, progress=False)
        out["generate_s"] = round((time.perf_counter() - start) / spec["num"], 4)
    return out


def training_estimate_gb(ckpts: str, run: str) -> float | None:
    """What rpgen estimated (and checked against free RAM) for the training of ``run``, in GB."""
    import rpgen.run_dir as runfiles
    from rpgen.data.checkpoint_set import CheckpointSet
    from rpgen.methods import get_method
    from rpgen.data.tokens import tokens_fit_in_memory
    from rpgen.data.tokenizer import fit_layout

    config = runfiles.load_config(Path(run))
    checkpoints = CheckpointSet.open(ckpts).checkpoints
    layout = fit_layout(checkpoints[:1], token_size=config.data.token_size)
    in_memory = tokens_fit_in_memory(len(checkpoints), layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
    memory = get_method(config.model.method).training_memory(config, layout, num_checkpoints=len(checkpoints),
                                                             num_processes=1, in_memory=in_memory)
    return None if memory is None else round(memory / 1e9, 3)


# ----------------------------------------------------------------------------- parent side

def run_worker(spec: dict, *, max_rss_gb: float, timeout_s: float) -> dict:
    """Run :func:`worker` in a fresh process; kill it above ``max_rss_gb`` or after ``timeout_s``."""
    return common.run_worker(__file__, spec, max_rss_gb=max_rss_gb, timeout_s=timeout_s)


def row(name: str, out: Path, *, reuse: bool, max_rss_gb: float, num: int = NUM_GENERATED) -> dict:
    from rpgen.evaluation import evaluate_run

    label, zoo, overrides, reusable = ROWS[name]
    ckpts = Path(ZOOS[zoo]) / "checkpoints"
    run, gen = out / name / "run", out / name / "generated"
    spec = {"ckpts": str(ckpts), "run": str(run), "overrides": overrides, "generate": True, "gen": str(gen),
            "num": num}
    reused_run = Path(ZOOS[zoo]) / "run"
    if reusable and reuse and (reused_run / "generator.safetensors").is_file():
        spec.update(stop_after=50, generate_from=str(reused_run))
    measured = run_worker(spec, max_rss_gb=max_rss_gb, timeout_s=3600)
    if "failed" in measured:
        return {"name": name, "method": label, "zoo": zoo, **measured}
    eval_run = Path(spec.get("generate_from", run))
    if spec.get("stop_after"):
        metrics = (eval_run / "metrics.jsonl").read_text().splitlines()
        measured["train_s"] = json.loads(metrics[-1])["elapsed_s"]
        measured["note"] = ("trained run of bench/memorization.py reused: train_s from its metrics.jsonl "
                            "(measured under contention), peak memory from 50 steps of the same config")
    results = evaluate_run(eval_run, gen, EVALUATOR, with_baselines=False, progress=False).to_dict()
    gen_summary, ckpt_summary = results["summary"]["generated"], results["summary"]["checkpoints"]
    return {
        "name": name, "method": label, "zoo": zoo, "overrides": overrides,
        "acc_mean": gen_summary["mean"], "acc_min": gen_summary["min"], "acc_max": gen_summary["max"],
        "novelty": statistics.median(results["novelty"]["generated"]),
        "checkpoints_acc_mean": ckpt_summary["mean"], "checkpoints_novelty": statistics.median(
            results["novelty"]["checkpoints"]),
        "num_generated": gen_summary["n"], **measured,
    }


def mlp_zoo(folder: Path, params: int, *, count: int) -> int:
    """``count`` random-initialised MLPs (64 -> w -> w -> 10) with about ``params`` parameters."""
    from safetensors.torch import save_file

    w = max(2, round((-(64 + 1 + 1 + 10) + math.sqrt((76) ** 2 + 4 * max(0, params - 10))) / 2))
    if (folder / f"{count - 1:04d}.safetensors").is_file():
        return sum(t.numel() for t in _mlp(w, 0).state_dict().values())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        save_file({k: v.contiguous() for k, v in _mlp(w, i).state_dict().items()}, str(folder / f"{i:04d}.safetensors"))
    return sum(t.numel() for t in _mlp(w, 0).state_dict().values())


def _mlp(width: int, seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 10))


def memory(out: Path, *, max_rss_gb: float, max_step_s: float, sizes=MEMORY_SIZES,
           methods=tuple(MEMORY_METHODS)) -> list[dict]:
    points = []
    stopped = set()
    for size in sizes:
        zoo = out / "mlp_zoos" / f"{size}"
        params = mlp_zoo(zoo, size, count=MEMORY_CHECKPOINTS)
        for method, overrides in MEMORY_METHODS.items():
            if method in stopped or method not in methods:
                continue
            steps = [f"train.steps={MEMORY_STEPS}", "train.log_every=1", "train.warmup_steps=1"]
            if method == "pdiff":
                steps = [f"pdiff.ae_steps={MEMORY_STEPS}", "pdiff.ddpm_steps=2", "train.log_every=1",
                         "train.warmup_steps=1"]
            spec = {"ckpts": str(zoo), "run": str(out / "mlp_runs" / f"{method}-{size}"),
                    "overrides": [*overrides, *steps]}
            measured = run_worker(spec, max_rss_gb=max_rss_gb, timeout_s=60 + max_step_s * (MEMORY_STEPS + 2))
            point = {"method": method, "params": params, "size": size, **measured}
            if "failed" not in measured and measured.get("step_s", 0) > max_step_s:
                point["failed"] = f"step over {max_step_s:.0f} s"
            if "failed" in point:
                stopped.add(method)
            points.append(point)
            print(json.dumps(point), flush=True)
        if stopped >= set(methods):
            break
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["rows", "memory", "memory-report", "report", "worker"])
    parser.add_argument("spec", nargs="?", help="(worker) JSON spec")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument("--only", nargs="*", help="(rows) names of the rows to run")
    parser.add_argument("--num", type=int, default=NUM_GENERATED, help="(rows) generated models per row")
    parser.add_argument("--no-reuse", action="store_true", help="retrain the RPG quickstart-preset rows")
    parser.add_argument("--sizes", type=int, nargs="*", help="(memory) extra sizes, merged into memory.json")
    parser.add_argument("--max-rss-gb", type=float, default=8.0)
    parser.add_argument("--max-step-s", type=float, default=120.0)
    parser.add_argument("--methods", nargs="*", choices=list(MEMORY_METHODS), help="(memory) only these methods")
    parser.add_argument("--note", default="", help="(memory) how the machine was shared, for the results file")
    parser.add_argument("--name", default="peers_memory",
                        help="(memory) results name: bench/results/NAME.{json,md,png}")
    args = parser.parse_args()
    if args.stage == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "rows":
        for name in args.only or list(ROWS):
            path = args.out / name / "row.json"
            if path.is_file():
                continue
            result = row(name, args.out, reuse=not args.no_reuse, max_rss_gb=args.max_rss_gb, num=args.num)
            result["machine"] = common.machine()
            path.write_text(json.dumps(result, indent=1))
            print(json.dumps({k: result.get(k) for k in ("name", "acc_mean", "novelty", "train_s",
                                                          "train_peak_rss_gb", "generate_s", "failed")}), flush=True)
    elif args.stage == "memory":
        points = memory(args.out, max_rss_gb=args.max_rss_gb, max_step_s=args.max_step_s,
                        sizes=tuple(args.sizes or MEMORY_SIZES), methods=tuple(args.methods or MEMORY_METHODS))
        path = args.out / "memory.json"
        commands = [common.command_line()]
        if (args.sizes or args.methods) and path.is_file():  # a part of the sweep: merge into the earlier one
            earlier = json.loads(path.read_text())
            new = {(p["method"], p["params"]) for p in points}
            old = [p for p in earlier["points"] if (p["method"], p["params"]) not in new]
            points = sorted(old + points, key=lambda p: (p["params"], list(MEMORY_METHODS).index(p["method"])))
            commands = earlier.get("commands", []) + commands
        sweep = {"points": points, "commands": commands, "machine": common.machine()}
        path.write_text(json.dumps(sweep, indent=1))
    if args.stage == "memory-report":
        sweep = json.loads((args.out / "memory.json").read_text())
    if args.stage in ("memory", "memory-report"):  # the results, estimates recomputed from the runs' configs
        points = sweep["points"]
        for p in points:
            run = args.out / "mlp_runs" / f"{p['method']}-{p.get('size')}"
            if "failed" not in p and (run / "config.toml").is_file():
                p["train_estimate_gb"] = training_estimate_gb(str(args.out / "mlp_zoos" / str(p["size"])), str(run))
        memory_report(points, RESULTS, name=args.name, max_rss_gb=args.max_rss_gb, max_step_s=args.max_step_s,
                      note=args.note,
                      commands=[*sweep.get("commands", []),
                                *([common.command_line()] if args.stage != "memory" else [])])
    if args.stage == "report":
        report(args.out, RESULTS, rows={name: spec[0] for name, spec in ROWS.items()}, max_rss_gb=args.max_rss_gb,
               max_step_s=args.max_step_s)


if __name__ == "__main__":
    main()
