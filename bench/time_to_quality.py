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
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, Report, Table, write_results

ZOOS = {
    "quickstart": {"collect": ["rpgen", "collect", "digits"], "evaluator": "rpgen.zoo.digits:evaluate",
                   "train": ["--config", "quickstart"]},
    "digits-10": {"collect": ["rpgen", "collect", "digits", "--runs", "10"], "evaluator": "rpgen.zoo.digits:evaluate"},
    "tiny-gpt2": {"collect": ["rpgen", "collect", "tiny-gpt2"], "evaluator": "rpgen.zoo.tiny_gpt2:evaluate"},
    "tiny-vit": {"collect": [sys.executable, str(REPO / "examples" / "tiny_vit" / "make_checkpoints.py")],
                 "evaluator": str(REPO / "examples" / "tiny_vit" / "evaluator.py") + ":evaluate",
                 "collect_out_positional": True},
}
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


def variant_row(name: str, variant: str, zoo: Path, root: Path, args: argparse.Namespace, log: Path) -> dict:
    spec = ZOOS[name]
    out = root / name / variant
    extra = ["--evaluator", spec["evaluator"]] if variant == "evaluator" else []
    sets = [x for o in args.overrides for x in ("--set", o)]
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
            "ckpt_mean": summary["checkpoints"]["mean"], "ckpt_min": summary["checkpoints"]["min"],
            "gen_mean": summary["generated"]["mean"], "gen_min": summary["generated"]["min"],
            "noise_mean": summary.get("noise_matched", {}).get("mean"), "num_generated": summary["generated"]["n"]}


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
            time_bar = f"; training {r['train_s']:.0f} s (bar <= {TRAIN_BAR_S} s: **{'met' if r['train_s'] <= TRAIN_BAR_S else 'not met'}**)"
        lines.append(f"- {r['zoo']} ({r['variant']}): generated mean {gap:+.2f} pp vs the checkpoints (bar >= -1 pp: "
                     f"**{'met' if ok else 'not met'}**){time_bar}.")
    for plain in (r for r in rows if r["variant"] == "plain"):
        ev = next((r for r in rows if r["zoo"] == plain["zoo"] and r["variant"] == "evaluator"), None)
        if ev is None:
            continue
        sooner, lower = plain["steps"] / ev["steps"], plain["gen_mean"] - ev["gen_mean"]
        met = sooner >= 2 and lower <= 0.3
        lines.append(f"- {plain['zoo']}, --evaluator: stopped at step {ev['steps']} of {ev['schedule']} "
                     f"({sooner:.1f}x fewer steps than the plain run's {plain['steps']}, "
                     f"{plain['train_s'] / ev['train_s']:.1f}x less time), generated mean {-lower:+.2f} pp vs the plain "
                     f"run (bar >= 2x sooner at <= 0.3 pp lower: **{'met' if met else 'not met'}**).")
    if data.get("quickstart"):
        q = data["quickstart"]
        lines.append(f"- `rpgen quickstart` end to end: {q['wall_s']:.0f} s (bar <= {QUICKSTART_BAR_S} s: "
                     f"**{'met' if q['wall_s'] <= QUICKSTART_BAR_S else 'not met'}**), generated {q['gen_mean']:.2f} "
                     f"vs checkpoints {q['ckpt_mean']:.2f}.")
    return lines


def render(data: dict) -> Report:
    table = [[r["zoo"], r["variant"], f"{r['params']:,}", r["checkpoints"], r["runs"], r["backbone"],
              f"{r['steps']:,} / {r['schedule']:,}", f"{r['train_s']:.0f}", f"{r['ckpt_mean']:.2f} / {r['ckpt_min']:.2f}",
              f"{r['gen_mean']:.2f} / {r['gen_min']:.2f}",
              "" if r["noise_mean"] is None else f"{r['noise_mean']:.2f}"] for r in data["rows"]]
    notes = [f"- {r['zoo']} ({r['variant']}): {r['stopped']}. Sizing: {'; '.join(r['sizing']) or 'the preset'}."
             for r in data["rows"]]
    return Report(
        title="Time to a working generator (CPU)",
        machine_note=data.get("machine_shared", "") or "nothing else running",
        intro=(f"The plain `rpgen train` on each zoo, and with `--evaluator`; then {data['num']} generated models "
               "evaluated beside the checkpoints and beside checkpoints + noise at the generated models' distance. "
               "Accuracy in % (mean / min); steps = where training ended / the schedule; times wall-clock, "
               "each command alone."),
        table=Table(["zoo", "variant", "params", "ckpts", "runs", "backbone", "steps", "train s", "checkpoints",
                     "generated", "noise same distance"], table, "llrrrlrrlll"),
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
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.log"
    rows, collects = [], {}
    for name in args.zoos:
        zoo, collect_s = collect(name, args.out, log)
        collects[name] = None if collect_s is None else round(collect_s, 1)
        for variant in args.variants:
            rows.append(variant_row(name, variant, zoo, args.out, args, log))
            print(json.dumps(rows[-1]), flush=True)
    quickstart = None if args.no_quickstart or "quickstart" not in args.zoos else quickstart_row(args.out, log)
    print(write_results(args.name, {"machine_shared": args.shared, "num": args.num, "collect_s": collects,
                                    "rows": rows, "quickstart": quickstart}, render))


if __name__ == "__main__":
    main()
