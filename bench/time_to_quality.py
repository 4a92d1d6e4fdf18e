"""Benchmark: how long the plain commands take to a working generator, with and without --evaluator.

    python bench/time_to_quality.py [--zoos quickstart digits-10 tiny-gpt2 tiny-vit] [--out runs/ttq]
                                    [--num 10] [--variants plain evaluator] [--set key=value ...]

For each zoo (collected once into OUT/NAME/zoo; ``tiny-vit`` is examples/tiny_vit, 4 seeds x 5
checkpoints, a zoo that is not built in):
- ``plain``: ``rpgen train ZOO --out RUN`` (the defaults; the quickstart zoo with ``--config
  quickstart``, as ``rpgen quickstart`` trains it);
- ``evaluator``: the same with ``--evaluator SPEC`` (stop once the generated models reach the
  checkpoints, keep the best);
then ``rpgen generate --num N --seed 0`` and ``rpgen evaluate`` (checkpoints, generated models,
noise at the generated models' distance). ``quickstart`` also times ``rpgen quickstart`` end to end.
Every command runs as a subprocess with the machine's threads; times are wall-clock. Writes
bench/results/time_to_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, RESULTS, Report, Table, command_line, write_results

ZOOS = {
    "quickstart": {"collect": ["rpgen", "collect", "digits"], "evaluator": "rpgen.zoo.digits:evaluate",
                   "train": ["--config", "quickstart"]},
    "digits-10": {"collect": ["rpgen", "collect", "digits", "--runs", "10"], "evaluator": "rpgen.zoo.digits:evaluate"},
    "tiny-gpt2": {"collect": ["rpgen", "collect", "tiny-gpt2"], "evaluator": "rpgen.zoo.tiny_gpt2:evaluate"},
    "tiny-vit": {"collect": [sys.executable, str(REPO / "examples" / "tiny_vit" / "make_checkpoints.py")],
                 "evaluator": str(REPO / "examples" / "tiny_vit" / "evaluator.py") + ":evaluate",
                 "collect_out_positional": True},
}
TRIVIAL = {"average_mean": "the average of the checkpoints", "averaged_16_mean": "the average of 16 of them",
           "gaussian_mean": "a Gaussian fitted per coordinate",
           "noise_mean": "a checkpoint + noise at the same distance"}
"""Models made without a generator, each row's best of which the conclusions name."""
TRAIN_BAR_S = 240  # training <= 4 min for every zoo of <= 30K parameters
QUICKSTART_BAR_S = 90


def run(args: list[str], *, log: Path) -> float:
    """Run a command (``rpgen`` as ``python -m rpgen.cli``); return its wall time; fail loudly."""
    command = [sys.executable, "-m", "rpgen.cli", *args[1:]] if args[0] == "rpgen" else args
    start = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, args)) + "\n")
        f.flush()
        done = subprocess.run([str(a) for a in command], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def collect(name: str, root: Path, log: Path) -> tuple[Path, float | None]:
    zoo, spec = root / name / "zoo", ZOOS[name]
    if zoo.exists():
        return zoo, None
    zoo.parent.mkdir(parents=True, exist_ok=True)
    args = [*spec["collect"], zoo] if spec.get("collect_out_positional") else [*spec["collect"], "--out", zoo,
                                                                              "--no-progress"]
    return zoo, run(args, log=log)


def variant_row(name: str, variant: str, zoo: Path, root: Path, args: argparse.Namespace, log: Path,
                timed: dict | None = None) -> dict:
    """Train, generate and evaluate one (zoo, variant); with ``timed`` (that pair's row of an
    earlier run of this script into the same OUT, its folders still there) only evaluate again."""
    spec = ZOOS[name]
    out = root / name / variant
    extra = ["--evaluator", spec["evaluator"]] if variant == "evaluator" else []
    sets = [x for o in args.overrides for x in ("--set", o)]
    if timed is not None:
        train_s, generate_s = timed["train_s"], timed["generate_s"]
    else:
        train_s = run(["rpgen", "train", zoo, "--out", out / "run", *spec.get("train", []), *extra, *sets,
                       "--no-progress", "--overwrite"], log=log)
        generate_s = run(["rpgen", "generate", out / "run", "--num", args.num, "--out", out / "gen", "--seed", 0,
                          "--no-progress", "--overwrite"], log=log)
    run(["rpgen", "evaluate", out / "run", "--generated", out / "gen", "--evaluator", spec["evaluator"],
         "--no-progress"], log=log)
    info = json.loads((out / "run" / "run.json").read_text())
    results = json.loads((out / "gen" / "results.json").read_text())
    summary = results["summary"]
    config = (out / "run" / "config.toml").read_text()
    return {"zoo": name, "variant": variant, "params": info["generated_params"], "checkpoints": info["num_checkpoints"],
            "runs": info["sizing"]["runs"] if info.get("sizing") else None,
            "sizing": info.get("sizing", {}).get("chosen", []), "train_s": round(train_s, 1),
            "generate_s": round(generate_s, 1), "steps": info["stopped"]["step"], "schedule": info["stopped"]["steps"],
            "stopped": info["stopped"]["reason"], "backbone": _field(config, "backbone"),
            "center": _field(config, "center"),
            "ckpt_mean": summary["checkpoints"]["mean"], "ckpt_min": summary["checkpoints"]["min"],
            "gen_mean": summary["generated"]["mean"], "gen_min": summary["generated"]["min"],
            "noise_mean": summary.get("noise_matched", {}).get("mean"), "num_generated": summary["generated"]["n"],
            "average_mean": summary.get("average", {}).get("mean"),
            "averaged_16_mean": summary.get("averaged_16", {}).get("mean"),
            "gaussian_mean": summary.get("gaussian", {}).get("mean"),
            "novelty_median": statistics.median(v for v in results["novelty"]["generated"] if v is not None)}


def _field(toml_text: str, key: str) -> str:
    for line in toml_text.splitlines():
        if line.split("=")[0].strip() == key:
            return line.split("=", 1)[1].strip().strip('"')
    return "?"


def quickstart_row(root: Path, log: Path) -> dict:
    out = root / "quickstart-e2e"
    wall = run(["rpgen", "quickstart", "--out", out, "--no-progress", "--overwrite"], log=log)
    results = json.loads((out / "generated" / "results.json").read_text())["summary"]
    return {"wall_s": round(wall, 1), "ckpt_mean": results["checkpoints"]["mean"],
            "gen_mean": results["generated"]["mean"]}


def conclusions(data: dict) -> list[str]:
    rows, lines = data["rows"], []
    for r in rows:
        gap = r["gen_mean"] - r["ckpt_mean"]
        ok = gap >= -1
        time_bar = ""
        if r["params"] <= 30_000 and r["variant"] == "plain":
            met = "met" if r["train_s"] <= TRAIN_BAR_S else "not met"
            time_bar = f"; training {r['train_s']:.0f} s (bar <= {TRAIN_BAR_S} s: **{met}**)"
        trivial = ""
        made = {label: r.get(key) for key, label in TRIVIAL.items() if r.get(key) is not None}
        if made:
            label, best = max(made.items(), key=lambda kv: kv[1])
            trivial = (f"; the best model made without a generator, {label}, scores {best:.2f} "
                       f"({r['gen_mean'] - best:+.2f} pp)")
        lines.append(f"- {r['zoo']} ({r['variant']}): generated mean {gap:+.2f} pp vs the checkpoints (bar >= -1 pp: "
                     f"**{'met' if ok else 'not met'}**){time_bar}{trivial}.")
    for plain in (r for r in rows if r["variant"] == "plain"):
        ev = next((r for r in rows if r["zoo"] == plain["zoo"] and r["variant"] == "evaluator"), None)
        if ev is None:
            continue
        sooner, lower = plain["steps"] / ev["steps"], plain["gen_mean"] - ev["gen_mean"]
        met = sooner >= 2 and lower <= 0.3
        lines.append(f"- {plain['zoo']}, --evaluator: stopped at step {ev['steps']} of {ev['schedule']} "
                     f"({sooner:.1f}x fewer steps than the plain run's {plain['steps']}, "
                     f"{plain['train_s'] / ev['train_s']:.1f}x less time), generated mean {-lower:+.2f} pp vs the "
                     f"plain run (bar >= 2x sooner at <= 0.3 pp lower: **{'met' if met else 'not met'}**).")
    if data.get("quickstart"):
        q = data["quickstart"]
        lines.append(f"- `rpgen quickstart` end to end: {q['wall_s']:.0f} s (bar <= {QUICKSTART_BAR_S} s: "
                     f"**{'met' if q['wall_s'] <= QUICKSTART_BAR_S else 'not met'}**), generated {q['gen_mean']:.2f} "
                     f"vs checkpoints {q['ckpt_mean']:.2f}.")
    return lines


def render(data: dict) -> Report:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    table = [[r["zoo"], r["variant"], f"{r['params']:,}", r["checkpoints"], r["runs"], r["backbone"],
              r.get("center", ""), f"{r['steps']:,} / {r['schedule']:,}", f"{r['train_s']:.0f}",
              f"{r['ckpt_mean']:.2f} / {r['ckpt_min']:.2f}", f"{r['gen_mean']:.2f} / {r['gen_min']:.2f}",
              number(r["noise_mean"]), number(r.get("average_mean")), number(r.get("averaged_16_mean")),
              number(r.get("gaussian_mean")), number(r.get("novelty_median"))] for r in data["rows"]]
    notes = [f"- {r['zoo']} ({r['variant']}): {r['stopped']}. Sizing: {'; '.join(r['sizing']) or 'the preset'}."
             for r in data["rows"]]
    return Report(
        title="Time to a working generator (CPU)",
        commands=data.get("commands", ()),
        machine_note=data.get("machine_shared", "") or "nothing else running",
        intro=(f"The plain `rpgen train` on each zoo, and with `--evaluator`; then {data['num']} generated models "
               "evaluated beside the checkpoints, checkpoints + noise at the generated models' distance, the "
               "average of the checkpoints, of 16 random ones, and a Gaussian fitted to each coordinate (what a "
               "generator that learnt only the checkpoints' mean and spread would give). Accuracy in % "
               "(mean / min); steps = where training ended / the schedule; novelty = median distance of a generated "
               "model to its nearest checkpoint over the checkpoints' own spacing (0: a copy); times wall-clock, "
               "each command alone."),
        table=Table(["zoo", "variant", "params", "ckpts", "runs", "backbone", "centre", "steps", "train s",
                     "checkpoints", "generated", "noise same distance", "average", "average of 16", "Gaussian",
                     "novelty"], table, "llrrrllrrllrrrrr"),
        sections=["## Conclusions (computed from the rows above)\n\n" + "\n".join(conclusions(data)),
                  "## Why each run stopped\n\n" + "\n".join(notes)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoos", nargs="+", default=list(ZOOS), choices=list(ZOOS))
    parser.add_argument("--variants", nargs="+", default=["plain", "evaluator"], choices=["plain", "evaluator"])
    parser.add_argument("--out", type=Path, default=Path("runs/ttq"))
    parser.add_argument("--num", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-quickstart", action="store_true", help="skip the end-to-end rpgen quickstart")
    parser.add_argument("--shared", default="", help="a note on the machine's load, written into the results")
    parser.add_argument("--name", default="time_to_quality")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows of other (zoo, variant) pairs already in the results file")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate again the runs under OUT that the results file has rows of, keeping their "
                             "training and generation times (for measures added since)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.log"
    previous = RESULTS / f"{args.name}.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {"rows": []}
    timed = {(r["zoo"], r["variant"]): r for r in old["rows"]} if args.reuse else {}
    rows, collects = [], {}
    for name in args.zoos:
        zoo, collect_s = collect(name, args.out, log)
        collects[name] = None if collect_s is None else round(collect_s, 1)
        for variant in args.variants:
            rows.append(variant_row(name, variant, zoo, args.out, args, log, timed.get((name, variant))))
            print(json.dumps(rows[-1]), flush=True)
    if args.reuse and old.get("quickstart") and "quickstart" in args.zoos:
        quickstart = old["quickstart"]
    else:
        quickstart = None if args.no_quickstart or "quickstart" not in args.zoos else quickstart_row(args.out, log)
    data = {"machine_shared": args.shared, "num": args.num, "collect_s": collects, "rows": rows,
            "quickstart": quickstart}
    if args.update and previous.is_file():
        data = updated(old, data)
    print(write_results(args.name, data, render))


def updated(old: dict, new: dict) -> dict:
    """``new`` with the rows (and the quickstart run) of ``old`` that it did not measure again, in
    ``old``'s order; the commands of both are kept."""
    rows = [next((n for n in new["rows"] if (n["zoo"], n["variant"]) == (r["zoo"], r["variant"])), r)
            for r in old["rows"]] + [r for r in new["rows"] if (r["zoo"], r["variant"]) not in
                                     {(o["zoo"], o["variant"]) for o in old["rows"]}]
    commands = [*old.get("commands", [old["command"]]), command_line()]
    return {**old, **new, "rows": rows, "quickstart": new["quickstart"] or old.get("quickstart"),
            "collect_s": {**old.get("collect_s", {}), **new["collect_s"]}, "commands": commands}


if __name__ == "__main__":
    main()
