"""Benchmark: transformers zoos through the CLI, and the order of tensors in the token sequence.

    python bench/hf.py [--out runs/bench-hf] [--num 20] [--parts tiny-gpt2 deep deep-name digits-order]
                       [--set key=value ...] [--results DIR]
    python bench/hf.py --merge OTHER/hf.json ...   # add rows measured elsewhere, re-render hf.md

Parts (each adds its rows to bench/results/hf.{md,json} as soon as it finishes):
- ``tiny-gpt2``: the built-in zoo (``collect_tiny_gpt2``: 20 Trainer ``checkpoint-N/`` folders of a
  tied 2-layer GPT-2), then ``rpgen train`` with the default config, ``rpgen generate --num N``
  and ``rpgen evaluate`` with ``rpgen.zoo.tiny_gpt2:evaluate``.
- ``deep``: a zoo that is not in the repo, built here with a plain PyTorch loop and
  ``save_pretrained(max_shard_size=...)``: 10 sharded folders of a tied 12-layer GPT-2 (width 8)
  on the same task; same CLI steps. Every generated folder is loaded with ``from_pretrained`` and
  checked to keep its tie and the zoo's shard files and keys.
- ``deep-name``: the same zoo and settings with ``data.tensor_order=name`` (plain key sort, rpgen's
  order before: ``h.10``, ``h.11`` between ``h.1`` and ``h.2``), against ``deep``'s model order.
- ``digits-order``: the one-run digits zoo (50 checkpoints): the generated tensors' order under
  both settings (no key has a multi-digit number, so it must be the same; same tokens, same run).

CLI steps run as subprocesses with one torch thread (OMP_NUM_THREADS=1); times are wall-clock.
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

import torch

from common import RESULTS, Report, Table, write_results

ROOT = Path(__file__).resolve().parent.parent
EVALUATOR = "rpgen.zoo.tiny_gpt2:evaluate"
PARTS_SHOWN = ("tiny-gpt2", "deep", "deep-name", "deep-default")  # rows of the table, in this order
DEEP = {"n_layer": 12, "n_embd": 8, "checkpoints": 10, "pretrain_steps": 800, "save_every": 50, "shard": "8KB"}


def cli(*args: object) -> float:
    """Run ``rpgen ARGS`` in a subprocess (one torch thread); return its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rpgen.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"rpgen {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def build_deep_zoo(out: Path, *, seed: int = 0) -> float:
    """10 save_pretrained folders (sharded) of a tied 12-layer GPT-2 trained with a plain loop."""
    import transformers

    from rpgen.zoo import tiny_gpt2 as task

    start = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(task.gpt2_config(n_layer=DEEP["n_layer"], n_embd=DEEP["n_embd"]))
    data = task._TrainingSequences((DEEP["pretrain_steps"] + DEEP["checkpoints"] * DEEP["save_every"])
                                   * task.BATCH_SIZE, seed=seed + 77).ids
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.PRETRAIN_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=task.PRETRAIN_LR,
                                                   total_steps=DEEP["pretrain_steps"], pct_start=0.1)
    model.train()
    for step, batch in enumerate(data.split(task.BATCH_SIZE)):
        loss = model(input_ids=batch, labels=task.answer_labels(batch)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step < DEEP["pretrain_steps"]:
            schedule.step()
            if step + 1 == DEEP["pretrain_steps"]:
                for group in optimizer.param_groups:
                    group["lr"] = task.FINETUNE_LR
        elif (step + 1 - DEEP["pretrain_steps"]) % DEEP["save_every"] == 0:
            model.save_pretrained(out / f"model-{step + 1}", max_shard_size=DEEP["shard"])
    return time.perf_counter() - start


def check_generated(gen: Path, zoo_folder: Path) -> dict:
    """Every generated folder: from_pretrained loads it, the tie holds, same shard files and keys."""
    import transformers
    from safetensors import safe_open

    def shards(folder: Path) -> dict[str, set[str]]:
        return {p.name: set(safe_open(str(p), "pt").keys()) for p in folder.glob("*.safetensors")}

    folders = sorted(p for p in gen.iterdir() if p.is_dir())
    tied = loads = same_shards = 0
    for folder in folders:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        loads += 1
        tied += model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
        same_shards += shards(folder) == shards(zoo_folder)
    return {"folders": len(folders), "from_pretrained": loads, "tied": tied, "same_shards": same_shards,
            "shards": len(shards(zoo_folder))}


def run_zoo(name: str, zoo: Path, out: Path, *, num: int, collect_s: float, settings: list[str]) -> dict:
    run, gen = out / f"{name}-run", out / f"{name}-gen"
    sets = [x for s in settings for x in ("--set", s)]
    train_s = cli("train", zoo, "--out", run, "--overwrite", "--no-progress", *sets)
    generate_s = cli("generate", run, "--num", num, "--out", gen, "--overwrite", "--no-progress")
    evaluate_s = cli("evaluate", run, "--generated", gen, "--evaluator", EVALUATOR, "--no-progress")
    results = json.loads((gen / "results.json").read_text())
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    novelty = [v for v in results["novelty"]["generated"] if v is not None]
    row = {
        "part": name, "zoo": zoo.name, "settings": settings or ["(default config)"],
        "params": json.loads((run / "run.json").read_text())["generated_params"],
        "checkpoints": results["checkpoints"], "generated": results["generated"],
        "ckpt": results["summary"]["checkpoints"], "gen": results["summary"]["generated"],
        "novelty_median": statistics.median(novelty) if novelty else None,
        "final_loss": losses[-1].get("loss") if losses else None,
        "verdict": results.get("verdict"),
        "times_s": {"collect": round(collect_s, 1), "train": round(train_s, 1), "generate": round(generate_s, 1),
                    "evaluate": round(evaluate_s, 1)},
    }
    first = sorted(p for p in zoo.iterdir() if p.is_dir())[0]
    row["checks"] = check_generated(gen, first)
    return row


def digits_order(out: Path) -> dict:
    from rpgen.data.checkpoint_set import CheckpointSet
    from rpgen.zoo.digits import collect_digits

    zoo = out / "digits"
    if not zoo.exists():
        collect_digits(zoo, progress=False)
    names = {order: [t.name for t in CheckpointSet.open(zoo, order=order).layout(64).generated]
             for order in ("model", "name")}
    return {"part": "digits-order", "generated_tensors": len(names["model"]),
            "same_order": names["model"] == names["name"], "order": names["model"]}


def write(rows: dict, command: str, results: Path, *, commands: list[str] | None = None,
          notes: list[str] | None = None) -> None:
    """hf.json (rows, machine, commands) and hf.md rendered from it, through ``common.write_results``."""
    write_results("hf", {"command": command, "commands": commands or [command], "shared_machine": True,
                         "rows": rows, "notes": notes or []}, render, results=results)


def render(data: dict) -> Report:
    """The Markdown report, computed from hf.json's data alone."""
    rows, table = data["rows"], []
    for key in PARTS_SHOWN:
        r = rows.get(key)
        if r is None:
            continue
        c, g, ch, t = r["ckpt"], r["gen"], r["checks"], r["times_s"]
        table.append([
            key, ", ".join(r["settings"]), f"{r['params']:,}",
            f"{c['mean']:.2f} / {c['min']:.2f} / {c['max']:.2f} (n={c['n']})",
            f"{g['mean']:.2f} / {g['min']:.2f} / {g['max']:.2f} (n={g['n']})",
            f"{g['mean'] - c['mean']:+.2f}", f"{r['novelty_median']:.2f}", f"{r['final_loss']:.4g}",
            f"{ch['from_pretrained']}/{ch['tied']}/{ch['same_shards']} of {ch['folders']} ({ch['shards']} shards)",
            f"{t['collect']} / {t['train']} / {t['generate']} / {t['evaluate']}"])
    sections = ["\n".join([
        "- tiny-gpt2: the built-in zoo, 20 Trainer `checkpoint-N/` folders (2 layers, width 32, tied).",
        (f"- deep: built by this script (not in the repo): {DEEP['checkpoints']} `save_pretrained` folders of a "
         f"tied {DEEP['n_layer']}-layer GPT-2 of width {DEEP['n_embd']}, sharded at {DEEP['shard']}, plain "
         "PyTorch training loop; tensor order = the model's (natural: h.2 before h.10)."),
        ("- deep-name: the same zoo with `data.tensor_order=name` (plain key sort: h.10, h.11 between h.1 "
         "and h.2), the order rpgen used for safetensors before."),
        "- deep-default: the deep zoo again, trained with the default config (no `--set`; 2,000 steps)."])]
    d = rows.get("digits-order")
    if d is not None:
        sections.append(
            f"Digits one-run zoo (50 checkpoints): the {d['generated_tensors']} generated tensors come in "
            f"{'the same' if d['same_order'] else 'a DIFFERENT'} order under both settings (no key has a "
            "multi-digit number), so the token sequence and the trained generator are unchanged. Checked bit "
            "for bit while building this: a quickstart-preset run (8 checkpoints, 60 steps, d_model 32, "
            "3 generated models) gave identical generator weights and generated tensors before and after "
            "the change.")
    if data.get("notes"):
        sections += ["What this says:", "\n".join(f"- {note}" for note in data["notes"])]
    for key in PARTS_SHOWN:
        if key in rows and rows[key].get("verdict"):
            sections.append(f"- **{key}** verdict: {rows[key]['verdict']}")
    return Report(
        title="Hugging Face zoos: Trainer / save_pretrained folders in, model folders out",
        commands=data.get("commands") or [data["command"]],
        machine_note="the CLI steps ran with one torch thread each" + (
            ". The machine was shared with other jobs while this ran: times are inflated and only roughly "
            "comparable" if data.get("shared_machine") else ""),
        intro=(f"Evaluator `{EVALUATOR}`: next-token accuracy (%) on the answer tokens of 500 held-out running-sum "
               "sequences; mean / min / max. Novelty: median distance of a generated model to its nearest "
               "checkpoint, in units of the checkpoints' own nearest-neighbour distance (from `rpgen evaluate`'s "
               "results.json)."),
        table=Table(["zoo", "settings", "params", "checkpoints", "generated", "gen − ckpt mean (pp)", "novelty",
                     "final loss", "loads / tied / same shards", "collect / train / generate / evaluate s"],
                    table, "llrllrrrll"),
        sections=sections,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-hf"))
    parser.add_argument("--num", type=int, default=20)
    parser.add_argument("--parts", nargs="+", default=["tiny-gpt2", "deep", "deep-name", "digits-order"])
    parser.add_argument("--set", dest="extra", nargs="*", default=[],
                        help="key=value settings added to every training (e.g. a quick smoke run)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for hf.{md,json}")
    parser.add_argument("--merge", type=Path, nargs="+", default=[], help="hf.json files whose rows to add")
    args = parser.parse_args()
    command = "python bench/hf.py " + " ".join(sys.argv[1:])
    path = args.results / "hf.json"
    old = json.loads(path.read_text()) if path.is_file() else {"rows": {}, "commands": []}
    rows, commands = old["rows"], old.get("commands", [old["command"]] if "command" in old else [])
    if args.merge:
        for other in args.merge:
            data = json.loads(other.read_text())
            rows.update(data["rows"])
            commands += [c for c in data.get("commands", [data.get("command")]) if c and c not in commands]
        for row in rows.values():  # no machine paths in results
            if "zoo" in row:
                row["zoo"] = Path(row["zoo"]).name
        write(rows, command, args.results, commands=commands, notes=old.get("notes"))
        return
    commands = [c for c in commands if c != command] + [command]
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        if part == "tiny-gpt2":
            from rpgen.zoo.tiny_gpt2 import collect_tiny_gpt2

            zoo = args.out / "tiny-gpt2"
            start = time.perf_counter()
            collect_tiny_gpt2(zoo, overwrite=True, progress=False)
            rows[part] = run_zoo(part, zoo, args.out, num=args.num, collect_s=time.perf_counter() - start,
                                 settings=args.extra)
        elif part in ("deep", "deep-name"):
            zoo = args.out / "deep"
            collect_s = rows.get("deep", {}).get("times_s", {}).get("collect", 0.0)
            if not zoo.exists():
                collect_s = build_deep_zoo(zoo)
            settings = args.extra + ([] if part == "deep" else ["data.tensor_order=name"])
            rows[part] = run_zoo(part, zoo, args.out, num=args.num, collect_s=collect_s, settings=settings)
        elif part == "digits-order":
            rows[part] = digits_order(args.out)
        else:
            raise SystemExit(f"unknown part {part!r}")
        write(rows, command, args.results, commands=commands, notes=old.get("notes"))
        print(f"{part}: done", flush=True)


if __name__ == "__main__":
    main()
