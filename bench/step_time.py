"""Benchmark: one training step of the RPG generator, by backbone and sequence length, beside today's.

    python bench/step_time.py [--tokens 110 430 1000 10000 100000] [--backbones mamba2 mamba]
                              [--baseline-rev REV] [--threads 2] [--d-models 64]

A row is one training step as ``rpgen train`` takes it: the backbone over ``batch`` whole
sequences of ``tokens`` tokens (width ``d_model``, 2 layers), the conv denoiser on 256 of their
tokens (64 values each, the default channels), the masked MSE, backward, AdamW. Each row runs in
a fresh process (its peak RSS is its own) and reports the best of ``--repeats`` after warm-up
steps: ``fwd_s`` (loss), ``bwd_s`` (backward), ``step_s`` (both and the optimizer).

``flop_estimate_s`` is the step's matrix arithmetic (matmuls and convolutions, forward and
backward, counted by ``torch.utils.flop_counter``) at the rate this process measures for a dense
float32 matmul: the time the step would take if every FLOP ran at GEMM speed.

Rows with ``impl: "today"`` run the same step on the code of ``--baseline-rev`` (extracted with
``git archive`` into a temporary folder and put first on the worker's PYTHONPATH), in the same
run as the others. Writes bench/results/step_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import REPO, Report, Table, peak_rss_gb, write_results

TOKEN_SIZE = 64
DIFFUSION_BATCH = 256


def gemm_rate() -> float:
    """FLOP/s of a dense float32 matmul of this process's shapes class (best of 5)."""
    import torch

    a, b = torch.randn(4096, 256), torch.randn(256, 512)
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 4096 * 256 * 512 / best


def worker(spec: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rpgen.config import ModelConfig
    from rpgen.models.generator import Generator

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    tokens, batch, d_model = spec["tokens"], spec["batch"], spec["d_model"]
    fields = {"backbone": spec["backbone"], "d_model": d_model, "mamba_impl": "torch"}
    if spec.get("d_state"):
        fields["d_state"] = spec["d_state"]
    cfg = ModelConfig(**fields)
    if not cfg.d_state:
        cfg = ModelConfig(**fields, d_state=16)  # what rpgen train resolves on a CPU
    per_tensor = 4096 // TOKEN_SIZE  # positions as in a zoo of 4,096-value tensors
    positions = torch.stack([torch.arange(tokens) // per_tensor, torch.arange(tokens) % per_tensor], dim=1)
    model = Generator(cfg, positions=positions, num_states=batch, token_size=TOKEN_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = torch.Generator().manual_seed(0)

    def loss_of() -> torch.Tensor:
        states = torch.randint(0, batch, (batch,), generator=rng)
        rows = torch.randperm(batch * tokens, generator=rng)[:DIFFUSION_BATCH]
        noisy = torch.randn(len(rows), TOKEN_SIZE, generator=rng)
        t = torch.randint(0, 1000, (len(rows),), generator=rng)
        target = torch.randn(len(rows), TOKEN_SIZE, generator=rng)
        return (model(states, rows, noisy, t) - target).pow(2).mean()

    def step() -> tuple[float, float, float]:
        start = time.perf_counter()
        loss = loss_of()
        mid = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        end = time.perf_counter()
        optimizer.step()
        return mid - start, end - mid, time.perf_counter() - start

    with FlopCounterMode(display=False) as counter:
        loss_of().backward()
    flops = counter.get_total_flops()
    for _ in range(spec["warmup"]):
        step()
    times = [step() for _ in range(spec["repeats"])]
    rate = gemm_rate()
    best = min(times, key=lambda t: t[2])
    return {"fwd_s": round(best[0], 4), "bwd_s": round(best[1], 4), "step_s": round(best[2], 4),
            "gflop": round(flops / 1e9, 3), "gemm_gflops": round(rate / 1e9, 1),
            "flop_estimate_s": round(flops / rate, 4), "peak_rss_gb": round(peak_rss_gb(), 3)}


def run_row(spec: dict, *, baseline: Path | None, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    if spec["impl"] == "today":
        env["PYTHONPATH"] = str(baseline / "src")
    out = common.run_worker(__file__, spec, max_rss_gb=args.max_rss_gb, timeout_s=args.timeout_s, env=env)
    return {"skipped": out["failed"]} if "failed" in out else out


def extract(rev: str, into: Path) -> Path:
    """The ``src/`` of git revision ``rev`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def rows_for(args: argparse.Namespace, baseline: Path | None) -> list[dict]:
    rows = []
    kinds = [(b, "new") for b in args.backbones] + ([("mamba", "today")] if baseline else [])
    for d_model in args.d_models:
        for tokens in args.tokens:
            for backbone, impl in kinds:
                long = tokens >= 10_000
                spec = {"backbone": backbone, "impl": impl, "tokens": tokens, "batch": args.batch, "d_model": d_model,
                        "threads": args.threads, "warmup": 1 if long else 3, "repeats": 2 if long else args.repeats}
                row = {k: spec[k] for k in ("backbone", "impl", "tokens", "batch", "d_model", "threads")}
                row.update(run_row(spec, baseline=baseline, args=args))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items()) and "skipped" not in r), None)


def conclusions(rows: list[dict], default: str) -> list[str]:
    """The bars, computed from the rows, for each backbone of this checkout (``default``: the
    config's default backbone, named as such)."""
    backbones = sorted({r["backbone"] for r in rows if r["impl"] == "new"}, key=lambda b: b != "mamba2")
    return [line for backbone in backbones for line in _bars(rows, backbone, default)]


def _bars(rows: list[dict], backbone: str, default: str) -> list[str]:
    lines, name = [], f"{backbone}{' (the default)' if backbone == default else ''}"
    for d_model in sorted({r["d_model"] for r in rows}):
        new = {r["tokens"]: r for r in rows if r["backbone"] == backbone and r["impl"] == "new"
               and r["d_model"] == d_model and "skipped" not in r}
        today = {r["tokens"]: r for r in rows
                 if r["impl"] == "today" and r["d_model"] == d_model and "skipped" not in r}
        for tokens in sorted(set(new) & set(today)):
            speed = today[tokens]["step_s"] / new[tokens]["step_s"]
            bar = "" if tokens != 430 else f" (bar >= 2.5x at 430 tokens: **{'met' if speed >= 2.5 else 'not met'}**)"
            lines.append(f"- d_model {d_model}, {tokens:,} tokens: the {name} step is {speed:.2f}x faster "
                         f"than today's ({today[tokens]['step_s']:.3f} s vs {new[tokens]['step_s']:.3f} s){bar}.")
        if 1_000 in new and max(new) >= 100_000:
            top = max(new)
            growth = (new[top]["step_s"] / new[1_000]["step_s"]) / (top / 1_000)
            lines.append(f"- {name}, d_model {d_model}: from 1,000 to {top:,} tokens the step time grows "
                         f"{new[top]['step_s'] / new[1_000]['step_s']:.1f}x for {top // 1_000}x the tokens "
                         f"({growth:.2f} of linear; bar <= 1: **{'met' if growth <= 1 else 'not met'}**).")
        over = [(t, r["step_s"] / r["flop_estimate_s"]) for t, r in sorted(new.items()) if t >= 1_000]
        if over:
            worst = max(over, key=lambda x: x[1])
            lines.append(f"- {name}, d_model {d_model}: at >= 1,000 tokens the step takes "
                         + ", ".join(f"{x:.1f}x" for _, x in over) + " its FLOP estimate (tokens "
                         + ", ".join(f"{t:,}" for t, _ in over) + f"); worst {worst[1]:.1f}x (bar <= 3x: "
                         f"**{'met' if worst[1] <= 3 else 'not met'}**).")
    return lines


def render(data: dict) -> Report:
    rows = data["rows"]
    table = []
    for r in rows:
        cells = [r["backbone"], r["impl"], f"{r['tokens']:,}", r["batch"], r["d_model"]]
        if "skipped" in r:
            table.append([*cells, f"skipped: {r['skipped']}", "", "", "", "", ""])
        else:
            table.append([*cells, f"{r['step_s']:.4f}", f"{r['fwd_s']:.4f}", f"{r['bwd_s']:.4f}",
                          f"{r['flop_estimate_s']:.4f}", f"{r['step_s'] / r['flop_estimate_s']:.1f}",
                          f"{r['peak_rss_gb']:.2f}"])
    rates = sorted(r["gemm_gflops"] for r in rows if "skipped" not in r)
    return Report(
        title="Training step time by backbone and sequence length (CPU)",
        machine_note=data.get("machine_shared", "") or "nothing else running",
        intro=(f"One RPG training step: the backbone (2 layers) over {rows[0]['batch']} sequences, the conv denoiser "
               f"on {DIFFUSION_BATCH} tokens of {TOKEN_SIZE} values, backward, AdamW; best of the repeats, each row in "
               f"a fresh process. `today` = the code of `{data['baseline_rev']}` (its default Mamba with the chunked "
               f"scan), `new` = this checkout. FLOP estimate = counted matmul and convolution FLOPs (forward and "
               f"backward) at the dense-matmul rate measured in each worker ({rates[0]:.0f}-{rates[-1]:.0f} GFLOP/s); "
               f"x FLOP = step / estimate."),
        table=Table(["backbone", "impl", "tokens", "batch", "d_model", "step s", "fwd s", "bwd s", "FLOP est. s",
                     "x FLOP", "peak RSS GB"], table, "llrrrrrrrrr"),
        sections=["## Conclusions (computed from the rows above)\n\n" + "\n".join(conclusions(rows, data["default"])),
                  *data.get("notes", [])],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("spec", nargs="?", help="(worker) JSON spec")
    parser.add_argument("--tokens", type=int, nargs="*", default=[110, 430, 1_000, 10_000, 100_000])
    parser.add_argument("--backbones", nargs="*", default=["mamba2", "mamba"])
    parser.add_argument("--d-models", type=int, nargs="*", default=[64])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-rev", default="4ef944a", help="git revision whose step is 'today' ('' for none)")
    parser.add_argument("--max-rss-gb", type=float, default=16.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--shared", default="", help="a note on the machine's load, written into the results")
    parser.add_argument("--name", default="step_time")
    args = parser.parse_args()
    if args.stage == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
        return
    from rpgen.config import ModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        baseline = extract(args.baseline_rev, Path(tmp)) if args.baseline_rev else None
        rows = rows_for(args, baseline)
    print(write_results(args.name, {"command": common.command_line(), "machine_shared": args.shared,
                                    "baseline_rev": args.baseline_rev, "default": ModelConfig.backbone,
                                    "rows": rows}, render))


if __name__ == "__main__":
    sys.exit(main())
