"""Benchmark: peak RAM and time for training steps and generation at 0.1M-200M generated parameters.

    python bench/scale.py [--sizes 0.1M 1M 10M 100M] [--generate-only 200M] [--checkpoints 50]
                          [--work /tmp/rpgen-scale] [--steps 4] [--scans chunked loop]

For each size: build a WideMLP zoo (``bench/wide_mlp.py``: random init + lightly perturbed copies,
``--checkpoints`` files), train with the ``cpu-large`` preset for ``--steps`` steps (fresh process;
peak RSS from ``wait4``; step time = median of the logged per-step times after the first), then
generate one model (fresh process, preset sampler). ``--generate-only`` sizes train a 1-step
generator on a 2-checkpoint zoo only to measure generation. Zoos are deleted after each size.
``--scans`` trains and generates with each ``model.scan`` on the same zoo (one row each).
Writes bench/results/scale.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, Report, Table, write_results
from wide_mlp import collect_wide_mlp

from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.config import apply_overrides, preset
from rpgen.methods.memory import generation_memory, training_memory
from rpgen.data.tokens import tokens_fit_in_memory
from rpgen.data.tokenizer import fit_layout

GB = 1e9


def parse_size(text: str) -> int:
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return wall seconds, peak RSS in GB (this child only) and its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return wall, usage.ru_maxrss * 1024 / GB, output


def step_times(run: Path) -> list[float]:
    elapsed = [json.loads(line)["elapsed_s"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [b - a for a, b in zip(elapsed, elapsed[1:])]


def measure(size: int, *, work: Path, checkpoints: int, steps: int, train_only_for_generation: bool,
            scans: list[str], generate: bool = True) -> list[dict]:
    zoo, run, gen = work / "zoo", work / "run", work / "gen"
    for p in (zoo, run, gen):
        shutil.rmtree(p, ignore_errors=True)
    start = time.perf_counter()
    paths = collect_wide_mlp(zoo, params=size, num_checkpoints=checkpoints, seed=0)
    zoo_s = time.perf_counter() - start
    config = preset("cpu-large")
    layout = fit_layout(CheckpointSet.open(zoo).checkpoints[:1], token_size=config.data.token_size)
    rows = []
    for scan in scans:
        rows.append(measure_scan(scan, zoo=zoo, run=run, gen=gen, paths=paths, zoo_s=zoo_s, layout=layout,
                                 config=config, checkpoints=checkpoints, steps=steps,
                                 train_only_for_generation=train_only_for_generation, generate=generate))
    for p in (zoo, run, gen):
        shutil.rmtree(p, ignore_errors=True)
    return rows


def measure_scan(scan: str, *, zoo: Path, run: Path, gen: Path, paths: list, zoo_s: float, layout, config,
                 checkpoints: int, steps: int, train_only_for_generation: bool, generate: bool = True) -> dict:
    rpgen = [sys.executable, "-m", "rpgen.cli"]
    config = apply_overrides(config, [f"model.scan={scan}"])
    overrides = [f"train.steps={steps}", "train.log_every=1", "train.warmup_steps=1", f"train.save_every={steps}",
                 f"model.scan={scan}"]
    sets = [x for o in overrides for x in ("--set", o)]
    train_s, train_rss, _ = timed([*rpgen, "train", str(zoo), "--out", str(run), "--config", "cpu-large",
                                   "--no-progress", *sets])
    per_step = step_times(run)
    gen_s, gen_rss = (timed([*rpgen, "generate", str(run), "--num", "1", "--out", str(gen), "--no-progress"])[:2]
                      if generate else (None, None))
    in_memory = tokens_fit_in_memory(checkpoints, layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
    row = {
        "scan": scan, "params": layout.num_params, "checkpoints": checkpoints,
        "zoo_gb": round(sum(p.stat().st_size for p in paths) / GB, 2),
        "tokens": layout.num_tokens, "tokens_in_ram": in_memory,
        "train_step_peak_rss_gb": None if train_only_for_generation else round(train_rss, 2),
        "train_step_s": None if train_only_for_generation else round(statistics.median(per_step), 2),
        "train_process_s": round(train_s, 1),
        "train_estimate_gb": round(training_memory(config, layout, num_checkpoints=checkpoints,
                                                   in_memory=in_memory) / GB, 2),
        "generate_peak_rss_gb": gen_rss and round(gen_rss, 2), "generate_s": gen_s and round(gen_s, 1),
        "generate_estimate_gb": round(generation_memory(config, layout, num_states=checkpoints,
                                                        models_at_once=1) / GB, 2),
        "model_gb": round(layout.num_params * 4 / GB, 2), "zoo_build_s": round(zoo_s, 1),
    }
    for p in (run, gen):
        shutil.rmtree(p, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["0.1M", "1M", "10M", "100M"])
    parser.add_argument("--generate-only", nargs="*", default=["200M"])
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rpgen-scale"))
    parser.add_argument("--scans", nargs="*", default=["chunked"], help="model.scan values, each on the same zoo")
    parser.add_argument("--note", default="", help="a note on the machine's load, written into the results")
    parser.add_argument("--name", default="scale", help="results name: bench/results/NAME.{json,md,png}")
    parser.add_argument("--no-generate", action="store_true", help="--sizes: measure training only")
    args = parser.parse_args()

    rows: list[dict] = []
    for s in args.sizes:  # results are rewritten after every size, so a long run leaves what it measured
        rows += measure(parse_size(s), work=args.work, checkpoints=args.checkpoints, steps=args.steps,
                        train_only_for_generation=False, scans=args.scans, generate=not args.no_generate)
        write(rows, name=args.name, note=args.note)
    for s in args.generate_only:
        rows += measure(parse_size(s), work=args.work, checkpoints=2, steps=1, train_only_for_generation=True,
                        scans=args.scans)
        write(rows, name=args.name, note=args.note)


def write(rows: list[dict], *, name: str = "scale", note: str = "") -> None:
    print(write_results(name, {"preset": "cpu-large", "note": note, "plot": f"{name}.png", "rows": rows}, render))
    plot(rows, RESULTS / f"{name}.png")


def render(data: dict) -> Report:
    cfg = preset(data["preset"])
    rows = []
    for r in data["rows"]:
        step = "—" if r["train_step_s"] is None else f"{r['train_step_s']:.2f}"
        rss = "— (1-step run only for generation)" if r["train_step_peak_rss_gb"] is None else \
            f"{r['train_step_peak_rss_gb']:.2f} ({r['train_estimate_gb']:.2f})"
        rows.append([r.get("scan", "loop"), f"{r['params']:,}", f"{r['checkpoints']} ({r['zoo_gb']:.2f})",
                     f"{r['tokens']:,}", step, rss, f"{r['train_process_s']:.0f}",
                     "—" if r["generate_s"] is None else f"{r['generate_s']:.1f}",
                     "—" if r["generate_peak_rss_gb"] is None else
                     f"{r['generate_peak_rss_gb']:.2f} ({r['generate_estimate_gb']:.2f})", f"{r['model_gb']:.2f}"])
    ratios = []
    for new in (r for r in data["rows"] if r.get("scan") == "chunked" and r["train_step_s"] is not None):
        old = next((r for r in data["rows"] if r.get("scan", "loop") == "loop" and r["params"] == new["params"]
                    and r["train_step_s"] is not None), None)
        if old is not None:
            ratios.append(f"{new['params']:,} parameters: the chunked scan's training step is "
                          f"{old['train_step_s'] / new['train_step_s']:.1f}x faster than the loop's in this run "
                          f"({new['train_step_s']:.2f} s vs {old['train_step_s']:.2f} s); train peak RSS "
                          f"{new['train_step_peak_rss_gb']:.2f} GB vs {old['train_step_peak_rss_gb']:.2f} GB"
                          + (f"; generation {old['generate_s'] / new['generate_s']:.1f}x faster."
                             if new["generate_s"] and old["generate_s"] else "."))
    return Report(
        title="Scale benchmark (CPU)",
        machine_note="torch threads per process" + (f". {data['note']}" if data.get("note") else ""),
        intro=(f"Preset `{data['preset']}`: token {cfg.data.token_size}, Mamba (pure PyTorch) d_model "
               f"{cfg.model.d_model}, {cfg.model.num_layers} layers, d_state {cfg.model.d_state}, denoiser "
               f"{list(cfg.model.denoiser_channels)}, batch {cfg.train.batch_size} checkpoint x "
               f"{cfg.train.diffusion_batch} tokens per step; sampling {cfg.sample.sampler} {cfg.sample.steps} steps, "
               f"chunks of {cfg.sample.chunk_tokens} tokens. Zoo: WideMLP (4 square Linear layers + LayerNorm), random "
               "init + 1% perturbations. Peak RSS is the whole process (Python + torch included), from `wait4`; step "
               "time is the median logged step after the first. 'train process' includes start-up and the one-pass "
               "statistics over all checkpoints. Estimates are what rpgen checks against available RAM before "
               "starting. Scan: `model.scan` (rows without one ran before the chunked scan existed: the loop)."),
        table=Table(["scan", "generated params", "checkpoints (GB on disk)", "tokens", "train step s",
                     "train peak RSS GB (estimate)", "train process s", "generate 1 model s",
                     "generate peak RSS GB (estimate)", "model size GB"], rows, "lrrrrrrrrr"),
        sections=[*ratios, f"![peak RSS and time against generated parameters]({data.get('plot', 'scale.png')})"],
    )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("scan") != "loop"]  # the default scan only
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    train = [r for r in rows if r["train_step_s"] is not None]
    ax1.plot([r["params"] for r in train], [r["train_step_peak_rss_gb"] for r in train], "o-", label="train")
    ax1.plot([r["params"] for r in rows], [r["generate_peak_rss_gb"] for r in rows], "s-", label="generate 1 model")
    ax1.plot([r["params"] for r in rows], [r["model_gb"] for r in rows], ":", color="gray", label="model size (fp32)")
    ax1.set(xscale="log", xlabel="generated parameters", ylabel="peak RSS (GB)", title="memory")
    ax2.plot([r["params"] for r in train], [r["train_step_s"] for r in train], "o-", label="train step")
    ax2.plot([r["params"] for r in rows], [r["generate_s"] for r in rows], "s-", label="generate 1 model")
    ax2.set(xscale="log", yscale="log", xlabel="generated parameters", ylabel="seconds", title="time (1 CPU thread)")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
