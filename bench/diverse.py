"""Benchmark: generators trained on diverse zoos (checkpoints of many independent training runs).

    python bench/diverse.py [--out runs/diverse] [--zoos digits-10,digits-50,mlp-10] [--only ROW,ROW]
                            [--num 20] [--quick] [--results DIR]

Zoos (ZOOS): digits-10 and digits-50 (the digits CNN, 10 or 50 runs x 5 checkpoints) and mlp-10
(bench/diverse_mlp.py, an architecture no built-in zoo has). Rows (ROWS; --only takes their names;
digits-50 runs rpg-default and rpg-aligned unless asked): ``METHOD-default`` is ``rpgen train ZOO
--out RUN`` with no options (rpg) or ``--set model.method=pdiff|mse``; ``METHOD-aligned`` adds
``--align weight-matching --model FACTORY``; ``rpg-VARIANT-mixA`` generate with ``--mix A`` from
that rpg run. Each training is its own process (wall seconds, peak RSS = the child's ru_maxrss);
every row is generated (--num) and evaluated through the CLI. On digits-10 and mlp-10 also: the
accuracy of midpoints between run r00's last checkpoint and each other run's, unaligned vs
weight-matched (the CNN also with BatchNorm statistics recomputed).

Every stage is reused when its output exists under --out (delete a folder to redo it); rows merge
into the existing results by (zoo, method, variant), so zoos and rows can be run one at a time.
--quick: a smoke run (2 checkpoints per run, 20 training steps; default --out runs/diverse-quick;
results in OUT/results unless --results). Writes RESULTS/diverse.{json,md}, diverse_frontier.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

import diverse_mlp
from common import RESULTS, Report, Table, child, cli, command_line, write_results
from rpgen.align import interpolate, permute, spec_from_model, weight_matching
from rpgen.safety.atomic import atomic_path
from rpgen.display import pyplot
from rpgen.zoo import digits

NAME = "diverse"
MIXES = {"default": (0.05, 0.1), "aligned": (0.05, 0.1, 0.25)}
TRAINED = tuple(f"{m}-{v}" for m in ("rpg", "pdiff", "mse") for v in ("default", "aligned"))
ROWS = TRAINED + tuple(f"rpg-{v}-mix{a:g}" for v, alphas in MIXES.items() for a in alphas)
QUICK_SETTINGS = ("train.steps=20", "pdiff.ae_steps=20", "pdiff.ddpm_steps=20")
QUICK_PER_RUN = 2


@dataclass(frozen=True)
class BenchZoo:
    name: str
    runs: int
    per_run: int  # checkpoints per run
    model: str  # factory spec for --model (paths relative to the repository root)
    evaluator: str
    about: str
    rows: tuple[str, ...] = ROWS  # run by default


ZOOS = {
    "digits-10": BenchZoo("digits-10", 10, 5, "rpgen.zoo.digits:DigitsCNN", "rpgen.zoo.digits:evaluate",
                     "the digits BatchNorm CNN (6,274 parameters) from `collect_digits(runs=10)`"),
    "digits-50": BenchZoo("digits-50", 50, 5, "rpgen.zoo.digits:DigitsCNN", "rpgen.zoo.digits:evaluate",
                     "the same CNN, `collect_digits(runs=50)`", ("rpg-default", "rpg-aligned")),
    "mlp-10": BenchZoo("mlp-10", 10, 5, "bench/diverse_mlp.py:DigitsMLP", "bench/diverse_mlp.py:evaluate",
                  "an architecture no built-in zoo has (`bench/diverse_mlp.py`): 64 -> 48 -> LayerNorm -> GELU -> "
                  "48 -> LayerNorm -> GELU -> 10 on the flattened digits (6,154 parameters), trained the same way"),
}
MIDPOINT_ZOOS = ("digits-10", "mlp-10")


def collect(zoo: BenchZoo, folder: Path, *, quick: bool) -> None:
    if not folder.is_dir():
        num = zoo.runs * (QUICK_PER_RUN if quick else zoo.per_run)
        if zoo.name.startswith("digits"):
            digits.collect_digits(folder, num_checkpoints=num, runs=zoo.runs, progress=False)
        else:
            diverse_mlp.collect_mlp(folder, num_checkpoints=num, runs=zoo.runs)


def train(zoo: BenchZoo, ckpts: Path, root: Path, name: str, *, quick: bool) -> dict:
    """Train run ``name`` (e.g. pdiff-aligned) unless done; its time and peak RSS (kept in NAME.train.json)."""
    run, record = root / "runs" / name, root / "runs" / f"{name}.train.json"
    if record.is_file() and run.is_dir():
        return json.loads(record.read_text())
    method, variant = name.split("-")
    settings = ([] if method == "rpg" else [f"model.method={method}"]) + list(QUICK_SETTINGS if quick else ())
    sets = [x for s in settings for x in ("--set", s)]
    aligning = ["--align", "weight-matching", "--model", zoo.model] if variant == "aligned" else []
    argv = cli("train", ckpts, "--out", run, "--overwrite", *aligning, *sets)
    print(f"{zoo.name}: training {name}", flush=True)
    seconds, peak = child(argv, root / "logs" / f"{name}.train.log")
    timing = {"train_s": round(seconds, 1), "train_peak_rss_gb": round(peak, 3)}
    record.write_text(json.dumps(timing) + "\n")
    return timing


def generate_and_evaluate(zoo: BenchZoo, root: Path, row: str, run: Path, *, num: int) -> dict:
    gen = root / "gen" / row
    if not (gen / "results.json").is_file():
        mix = ["--mix", row.rsplit("mix", 1)[1]] if "-mix" in row else []
        print(f"{zoo.name}: generating and evaluating {row}", flush=True)
        child(cli("generate", run, "--out", gen, "--num", num, "--overwrite", *mix), root / "logs" / f"{row}.gen.log")
        child(cli("evaluate", run, "--generated", gen, "--evaluator", zoo.evaluator), root / "logs" / f"{row}.eval.log")
    return json.loads((gen / "results.json").read_text())


def make_row(zoo: BenchZoo, row: str, run: Path, results: dict, timing: dict) -> dict:
    method, variant = row.split("-", 1)
    config = tomllib.loads((run / "config.toml").read_text())
    run_of = json.loads((run / "run.json").read_text()).get("run_of_checkpoint") or []
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    s, noise, ck = results["summary"], results.get("against_noise") or {}, results["summary"]["checkpoints"]
    gen, novelty = s["generated"], [v for v in results["novelty"]["generated"] if v is not None]
    finite, pdiff = gen["n"] - gen["n_nonfinite"], config["pdiff"] if method == "pdiff" else None
    return {
        "zoo": zoo.name, "runs": len(set(run_of)) or zoo.runs, "method": method, "variant": variant,
        "align": "weight-matching" if variant.startswith("aligned") else "none", "state": config["data"]["states"],
        "checkpoints": ck["n"], "ckpt_mean": ck["mean"], "ckpt_min": ck["min"],
        "generated": gen["n"], "acc_mean": gen["mean"], "acc_min": gen["min"], "acc_max": gen["max"],
        "acc_se": gen["std"] / finite ** 0.5 if finite else None,
        "novelty": statistics.median(novelty) if novelty else None,
        "noise_same_distance_acc": s.get("noise_matched", {}).get("mean"),
        "average_acc": s.get("average", {}).get("mean"), **timing,
        **{k: noise.get(k) for k in ("beats_noise", "margin", "standard_error")},
        "d_model": None if pdiff else config["model"]["d_model"],
        "lr": pdiff["lr"] if pdiff else config["train"]["lr"],
        "steps": pdiff["ae_steps"] + pdiff["ddpm_steps"] if pdiff else config["train"]["steps"],
        **({"stage_steps": [pdiff["ae_steps"], pdiff["ddpm_steps"]]} if pdiff else {}),
        "final_loss": losses[-1]["loss"] if losses else None,
    }


def noise_curve(results: dict) -> list[list[float]]:
    """(median novelty, mean accuracy) of each checkpoint + noise group of one evaluation, by novelty."""
    s = results["summary"]
    return sorted([statistics.median([v for v in results["novelty"][k] if v is not None]), s[k]["mean"]]
                  for k in results["baselines"] if k.startswith("noise_") and s[k]["mean"] is not None)


def midpoint(zoo: BenchZoo, ckpts: Path) -> dict:
    """Accuracy of the midpoint between run r00's last checkpoint and each other run's last, unaligned vs
    weight-matched (CNN: also with BatchNorm statistics recomputed on the training split)."""
    bn = zoo.name.startswith("digits")
    model, evaluate = (digits.DigitsCNN, digits.evaluate) if bn else (diverse_mlp.DigitsMLP, diverse_mlp.evaluate)
    last = {p.name.split("_")[0]: p for p in sorted(ckpts.glob("*.safetensors"))}  # run -> its last checkpoint
    ref, *others = [load_file(p) for p in last.values()]
    spec = spec_from_model(model())
    acc: dict[str, list[float]] = {"endpoint_mean": [0.5 * (evaluate(ref)["accuracy"] + evaluate(b)["accuracy"])
                                                     for b in others]}
    for other in others:
        for label, b in (("naive", other), ("aligned", permute(other, spec, weight_matching(ref, other, spec)))):
            mid = interpolate(ref, b, 0.5)
            acc.setdefault(label, []).append(evaluate(mid)["accuracy"])
            if bn:
                acc.setdefault(f"{label}_bn_reset", []).append(evaluate(reset_batchnorm(mid))["accuracy"])
    return {"pairs": len(others), **{k: statistics.fmean(v) for k, v in acc.items()}}


def reset_batchnorm(state_dict: dict) -> dict:
    """A DigitsCNN state_dict with BatchNorm running statistics recomputed over the training split
    (train-mode forward passes, momentum None = cumulative average)."""
    model = digits.DigitsCNN()
    model.load_state_dict(state_dict)
    for bn in (model.bn1, model.bn2, model.bn3):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for batch in digits.load_split()[0].split(digits.BATCH_SIZE):
            model(batch)
    return model.state_dict()


def fmt(value: float | None, places: int = 2) -> str:
    return "—" if value is None else f"{value:.{places}f}"


def bar(title: str, rows: list[dict], checks) -> str:
    """'- title: met / NOT met / not run (the numbers)': met when some row passes all its ``checks(row)``."""
    if not rows:
        return f"- {title}: not run"
    results = {f"{r['method']}-{r['variant']}": checks(r) for r in rows}
    met = any(all(ok for ok, _ in checked) for checked in results.values())
    lines = [f"{name}: " + "; ".join(f"{text} {'yes' if ok else 'NO'}" for ok, text in checked)
             for name, checked in results.items()]
    return f"- {title}: **{'met' if met else 'NOT met'}**" + "".join(f"\n  - {line}" for line in lines)


def check(r: dict, key: str, limit: float, why: str = "", *, at_most: bool = False) -> tuple[bool, str]:
    value = r.get(key)
    ok = value is not None and (value <= limit if at_most else value >= limit)
    return ok, f"{key} {fmt(value)} {'≤' if at_most else '≥'} {limit:.2f}{why}"


def bars(rows: list[dict]) -> list[str]:
    def find(zoo: str, method: str, variant: str | None = None) -> list[dict]:
        return [r for r in rows if r["zoo"] == zoo and r["method"] == method and variant in (None, r["variant"])]

    def near(r: dict, key: str, base: str, pp: float) -> tuple[bool, str]:
        return check(r, key, r[base] - pp, f" ({base} {fmt(r[base])} − {pp:g})")

    return [
        bar("10-run digits, default rpg", find("digits-10", "rpg", "default"), lambda r: [
            near(r, "acc_mean", "ckpt_mean", 1), near(r, "acc_min", "ckpt_min", 3),
            check(r, "train_s", 1800, at_most=True)]),
        bar("50-run digits, default rpg", find("digits-50", "rpg", "default"), lambda r: [
            near(r, "acc_mean", "ckpt_mean", 2), check(r, "train_s", 5400, at_most=True)]),
        bar("New models (any rpg row on digits-10)", find("digits-10", "rpg"), lambda r: [
            check(r, "novelty", 1.5), near(r, "acc_mean", "ckpt_mean", 1),
            (r.get("beats_noise") is True, f"beats noise (margin {fmt(r.get('margin'))}, SE "
                                           f"{fmt(r.get('standard_error'))})")]),
    ]


HEADER = ["zoo", "runs", "method", "variant", "align", "state", "checkpoints mean / min", "generated mean / min",
          "novelty", "noise same distance", "average", "beats noise (margin, SE)", "d_model", "lr", "steps",
          "final loss", "train s", "train peak RSS GB"]


def cells(r: dict) -> list:
    steps = "+".join(map(str, r["stage_steps"])) if r.get("stage_steps") else r["steps"]
    beats = "—" if r.get("beats_noise") is None else (
        f"{'yes' if r['beats_noise'] else 'no'} ({r['margin']:+.2f}, {r['standard_error']:.2f})")
    return [r["zoo"], r["runs"], r["method"], r["variant"], r["align"], r["state"],
            f"{fmt(r['ckpt_mean'])} / {fmt(r['ckpt_min'])}", f"{fmt(r['acc_mean'])} / {fmt(r['acc_min'])}",
            fmt(r["novelty"]), fmt(r["noise_same_distance_acc"]), fmt(r["average_acc"]), beats,
            r["d_model"] or "—", f"{r['lr']:g}", steps, fmt(r["final_loss"], 4), fmt(r["train_s"], 0),
            fmt(r["train_peak_rss_gb"])]


def render(data: dict) -> Report:
    rows = data["rows"]
    first = {z: next(r for r in rows if r["zoo"] == z) for z in dict.fromkeys(r["zoo"] for r in rows)}
    intro = [
        *(["**Quick smoke run** (tiny step counts): these numbers say nothing about the methods."]
          if data.get("quick") else []),
        "Zoos: " + "; ".join(f"`{z}`: {ZOOS[z].about}, {r['checkpoints']} checkpoints of {r['runs']} runs"
                             for z, r in first.items()) + ". Accuracy on the digits test split (%).",
        "Novelty = median distance of a generated model to its nearest training checkpoint, in units of the "
        "checkpoints' own nearest-neighbour spacing (aligned rows: the aligned checkpoints'). Noise same distance: "
        "checkpoints + noise moved as far as the generated models; beats noise when the margin (generated − noise "
        "mean) is above 2 standard errors. Average: the mean of all checkpoints' weights.",
        "Mix rows (`rpgen generate --mix ALPHA`) sample the rpg run of their variant without retraining: their "
        "train s and peak RSS are that run's. Each training ran as its own process (peak RSS = that process's).",
        "Aligned rows: `rpgen train --align weight-matching --model FACTORY` with the zoo's model "
        f"({', '.join(sorted({f'`{ZOOS[z].model}`' for z in first}))}): the run trains on, and is evaluated against, "
        "copies of the checkpoints permuted to match the first one.",
    ]
    mid = data.get("midpoint") or {}
    keys = ("endpoint_mean", "naive", "aligned", "naive_bn_reset", "aligned_bn_reset")
    mid_table = Table(["zoo", "pairs", "endpoints", "naive midpoint", "aligned midpoint", "naive, BN reset",
                       "aligned, BN reset"], [[z, m["pairs"], *(fmt(m.get(k)) for k in keys)] for z, m in mid.items()],
                      "lrrrrrr")
    return Report(
        title="Diverse zoos: generators trained on many training runs",
        commands=data.get("commands") or [data["command"]],
        machine_note="each training, generation and evaluation ran as its own process with one torch thread",
        intro="\n\n".join(intro),
        table=Table(HEADER, [cells(r) for r in rows], "lrllllllrrrlrrrrrr"),
        sections=["## Bars", "\n".join(bars(rows)),
                  "## Midpoints between runs",
                  "Accuracy (%) of the midpoint of run r00's last checkpoint and each other run's last (mean over "
                  "the pairs), unaligned and weight-matched to r00; BN reset: BatchNorm statistics recomputed on the "
                  "training split (the CNN only).", mid_table.markdown() if mid else "not run",
                  "## Accuracy vs novelty", "![accuracy vs novelty per zoo](diverse_frontier.png)",
                  "Blue: rpg, red: p-diff, green: mse; circles: unaligned, diamonds: aligned (novelty in the aligned "
                  "checkpoints' units). Dashed: checkpoints + noise, from the rpg-default evaluation."])


def plot(data: dict, path: Path) -> None:
    """One panel per zoo: checkpoints, each row at (novelty, mean accuracy) ± SE, checkpoint + noise."""
    plt = pyplot()
    zoos = [z for z in ZOOS if any(r["zoo"] == z for r in data["rows"])]
    fig, axes = plt.subplots(1, len(zoos), figsize=(5.5 * len(zoos), 4.5), squeeze=False, dpi=100)
    colors = {"rpg": "tab:blue", "pdiff": "tab:red", "mse": "tab:green"}
    for ax, zoo in zip(axes[0], zoos):
        rows = [r for r in data["rows"] if r["zoo"] == zoo and r["novelty"] and r["acc_mean"] is not None]
        curve = data.get("noise_curve", {}).get(zoo)
        if curve:
            ax.plot(*zip(*curve), "--", color="gray", label="checkpoint + noise")
        ckpt = next(r["ckpt_mean"] for r in data["rows"] if r["zoo"] == zoo)
        ax.plot([1], [ckpt], "*", color="black", markersize=12, label="checkpoints (mean)")
        for r in rows:
            ax.errorbar(r["novelty"], r["acc_mean"], yerr=r.get("acc_se") or 0, color=colors[r["method"]],
                        fmt="o" if r["align"] == "none" else "D", capsize=3)
            ax.annotate(f"{r['method']}-{r['variant']}", (r["novelty"], r["acc_mean"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set(title=zoo, xlabel="novelty (median, log)", ylabel="test accuracy % (mean ± SE)")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with ``new`` replacing rows of the same (zoo, method, variant), in zoo and ROWS order."""
    rows = {(r["zoo"], r["method"], r["variant"]): r for r in old + new}
    return sorted(rows.values(), key=lambda r: (list(ZOOS).index(r["zoo"]),
                                                ROWS.index(f"{r['method']}-{r['variant']}")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default runs/diverse (--quick: runs/diverse-quick)")
    parser.add_argument("--zoos", default="digits-10,digits-50,mlp-10")
    parser.add_argument("--only", default="", help=f"rows to run, of {', '.join(ROWS)}")
    parser.add_argument("--num", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny step counts, results in OUT/results")
    parser.add_argument("--results", type=Path, default=None, help="folder for diverse.{json,md} and the plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = (args.out or Path("runs/diverse-quick" if args.quick else "runs/diverse")).resolve()
    results_dir = args.results or (out / "results" if args.quick else RESULTS)
    only = [r for r in args.only.split(",") if r]
    zoos = [z for z in args.zoos.split(",") if z]
    unknown = [z for z in zoos if z not in ZOOS] + [r for r in only if r not in ROWS]
    if unknown or not zoos:
        raise SystemExit(f"unknown zoos or rows {unknown}; zoos: {', '.join(ZOOS)}; rows: {', '.join(ROWS)}")
    path = results_dir / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": [], "midpoint": {}, "noise_curve": {}}
    command = command_line()
    data["commands"] = [c for c in data.get("commands", []) if c != command] + [command]
    data["quick"] = data.get("quick", False) or args.quick
    for zoo in map(ZOOS.get, zoos):
        root, wanted = out / zoo.name, [r for r in ROWS if r in (only or zoo.rows)]
        ckpts = root / "checkpoints"
        collect(zoo, ckpts, quick=args.quick)
        if zoo.name in MIDPOINT_ZOOS:
            cached = root / "midpoint.json"
            if not cached.is_file():
                cached.write_text(json.dumps(midpoint(zoo, ckpts)) + "\n")
            data["midpoint"][zoo.name] = json.loads(cached.read_text())
        new = []
        for row in wanted:
            trained = row.split("-mix")[0]
            timing = train(zoo, ckpts, root, trained, quick=args.quick)
            run = root / "runs" / trained
            results = generate_and_evaluate(zoo, root, row, run, num=args.num)
            if row == "rpg-default":
                data["noise_curve"][zoo.name] = noise_curve(results)
            new.append(make_row(zoo, row, run, results, timing))
        data["rows"], data["command"] = merge_rows(data["rows"], new), command
        text = write_results(NAME, data, render, results=results_dir)
        plot(json.loads(path.read_text()), results_dir / f"{NAME}_frontier.png")
        print(f"{zoo.name}: {len(new)} rows written to {path}", flush=True)
    print(text)


if __name__ == "__main__":
    main()
