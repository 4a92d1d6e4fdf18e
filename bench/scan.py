"""Benchmark: the chunked selective scan against the loop (issue 14), and the backbones side by side.

    python bench/scan.py [--tokens 1000 10000 100000] [--batches 1 8] [--chunks 16 32 64]
                         [--max-rss-gb 8] [--backbones]

Each row runs in a fresh process (``worker``), so its peak RSS (VmHWM) is its own; the parent
kills a row above ``--max-rss-gb`` and records it as skipped. A scan row times
``selective_scan`` alone on the shapes one Mamba layer of width ``d_model`` gives it
(e = 2 d_model, n = d_state): forward, then backward of ``(y * w).sum()`` for a fixed random
``w``; the best of ``--repeats`` after one warm-up on 256 tokens. ``--backbones`` adds a
training step (forward + backward of the mean square of the output) of every backbone at a few
token counts. Writes bench/results/scan.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
D_STATE = 16
FULL_TENSORS = 6
"""(b, l, e, n) float32 tensors the loop holds at its peak (decay, input, states, their stack, grads)."""


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")  # pragma: no cover


def worker(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    if spec["kind"] == "backbone":
        return backbone_worker(spec)
    from rpgen.models.backbones import selective_scan, selective_scan_reference

    b, l, e, n = spec["batch"], spec["tokens"], 2 * spec["d_model"], D_STATE

    def scan(*t):
        return selective_scan_reference(*t) if spec["impl"] == "loop" else selective_scan(*t, chunk=spec["chunk"])

    def inputs(length: int) -> list:
        dt = torch.rand(b, length, e) * 0.1
        A = -torch.exp(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))  # Mamba's init
        B, C, x = torch.randn(b, length, n), torch.randn(b, length, n), torch.randn(b, length, e)
        return [t.requires_grad_() for t in (dt, A, B, C, x)]

    def once(ins: list) -> tuple[float, float]:
        start = time.perf_counter()
        y = scan(*ins)
        mid = time.perf_counter()
        (y * torch.randn_like(y)).sum().backward()
        return mid - start, time.perf_counter() - mid

    once(inputs(min(l, 256)))
    ins = inputs(l)
    times = [once(ins) for _ in range(spec["repeats"])]
    fwd, bwd = min(t[0] for t in times), min(t[1] for t in times)
    return {"fwd_s": round(fwd, 4), "bwd_s": round(bwd, 4), "peak_rss_gb": round(peak_rss_gb(), 3)}


def backbone_worker(spec: dict) -> dict:
    import torch

    from rpgen.config import ModelConfig
    from rpgen.models.backbones import build_backbone

    cfg = ModelConfig(backbone=spec["backbone"], d_model=spec["d_model"], mamba_impl="torch",
                      scan=spec.get("scan", "chunked"))
    model = build_backbone(cfg, seq_len=spec["tokens"])
    x = torch.randn(spec["batch"], spec["tokens"], spec["d_model"])
    times = []
    for _ in range(1 + spec["repeats"]):  # the first is a warm-up
        start = time.perf_counter()
        model(x).square().mean().backward()
        times.append(time.perf_counter() - start)
    return {"step_s": round(min(times[1:]), 4), "peak_rss_gb": round(peak_rss_gb(), 3)}


def run_worker(spec: dict, *, max_rss_gb: float, timeout_s: float) -> dict:
    """Run :func:`worker` in a fresh process; kill it above ``max_rss_gb`` or after ``timeout_s``."""
    proc = subprocess.Popen([sys.executable, __file__, "worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start, peak = time.perf_counter(), 0.0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024 / 1e9)
        except OSError:
            pass
        if peak > max_rss_gb or time.perf_counter() - start > timeout_s:
            proc.kill()
            proc.wait()
            return {"skipped": f"over {max_rss_gb} GB" if peak > max_rss_gb else f"over {timeout_s:.0f} s"}
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        return {"skipped": f"exit {proc.returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"}
    return json.loads(stdout.strip().splitlines()[-1])


def scan_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in args.batches:
        for tokens in args.tokens:
            impls = [("loop", None)] + [("chunked", c) for c in (args.chunks if tokens < 100_000 else [args.default])]
            for impl, chunk in impls:
                row = {"impl": impl, "tokens": tokens, "batch": batch, "d_model": args.d_model, "chunk": chunk}
                full_gb = FULL_TENSORS * batch * tokens * 2 * args.d_model * D_STATE * 4 / 1e9
                if impl == "loop" and full_gb > args.max_rss_gb:
                    row["skipped"] = (f"needs about {full_gb:.0f} GB ({FULL_TENSORS} (b, l, e, n) float32 tensors) "
                                      f"> the {args.max_rss_gb:g} GB cap")
                else:
                    spec = {"kind": "scan", **row, "repeats": args.repeats if tokens <= 10_000 else 1}
                    row.update(run_worker(spec, max_rss_gb=args.max_rss_gb, timeout_s=args.timeout_s))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def backbone_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    kinds = [("mamba", "chunked"), ("mamba", "loop"), ("lstm", None), ("transformer", None), ("gmlp", None)]
    for tokens in args.backbone_tokens:
        for backbone, scan in kinds:
            row = {"backbone": backbone if scan is None else f"mamba ({scan})", "tokens": tokens, "batch": 8,
                   "d_model": args.d_model}
            spec = {"kind": "backbone", "backbone": backbone, "scan": scan or "chunked", "tokens": tokens, "batch": 8,
                    "d_model": args.d_model, "repeats": 1}
            row.update(run_worker(spec, max_rss_gb=args.max_rss_gb, timeout_s=args.timeout_s))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def write_json(path: Path, data: dict) -> None:
    """Local results writer (to be replaced by bench/common.py's shared one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def total(row: dict) -> float | None:
    return None if "skipped" in row else row["fwd_s"] + row["bwd_s"]


def conclusions(rows: list[dict], default: int) -> list[str]:
    """Sentences computed from the rows: speed-ups, the bars, the best chunk."""
    lines = []
    settings = sorted({(r["batch"], r["tokens"]) for r in rows})
    for batch, tokens in settings:
        same = [r for r in rows if (r["batch"], r["tokens"]) == (batch, tokens)]
        loop = next(r for r in same if r["impl"] == "loop")
        new = next((r for r in same if r["impl"] == "chunked" and r["chunk"] == default and "skipped" not in r), None)
        timed = [r for r in same if r["impl"] == "chunked" and "skipped" not in r]
        if new is None:
            lines.append(f"- batch {batch}, {tokens:,} tokens: chunked scan (chunk {default}) did not run.")
            continue
        best = min(timed, key=total)
        if "skipped" in loop:
            lines.append(f"- batch {batch}, {tokens:,} tokens: loop skipped ({loop['skipped']}); chunked scan "
                         f"(chunk {default}) {total(new):.2f} s forward + backward at {new['peak_rss_gb']:.2f} GB peak RSS.")
            continue
        speed = total(loop) / total(new)
        bar = "" if tokens < 10_000 else (" (bar >= 3x: **met**)" if speed >= 3 else " (bar >= 3x: **not met**)")
        both = "both faster" if new["fwd_s"] < loop["fwd_s"] and new["bwd_s"] < loop["bwd_s"] else "**not both faster**"
        lines.append(
            f"- batch {batch}, {tokens:,} tokens: chunked (chunk {default}) is {speed:.1f}x faster than the loop "
            f"forward + backward{bar}; forward {loop['fwd_s'] / new['fwd_s']:.1f}x, backward "
            f"{loop['bwd_s'] / new['bwd_s']:.1f}x ({both}); peak RSS {new['peak_rss_gb']:.2f} GB vs "
            f"{loop['peak_rss_gb']:.2f} GB ({new['peak_rss_gb'] / loop['peak_rss_gb']:.2f}x). Fastest chunk here: "
            f"{best['chunk']} ({total(best):.3f} s vs {total(new):.3f} s at {default}).")
    return lines


def write_results(rows: list[dict], backbones: list[dict], *, command: str, info: dict, default: int,
                  shared: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "scan.json", {"command": command, "machine": info, "machine_shared": shared,
                                       "d_state": D_STATE, "default_chunk": default, "rows": rows,
                                       "backbones": backbones})
    lines = [
        "# Selective scan: chunked vs loop (CPU)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch thread per process), "
        f"Python {info['python']}, torch {info['torch']}. {shared}",
        "",
        f"`selective_scan` alone (float32) on the shapes of one Mamba layer: e = 2 d_model, n = {D_STATE}; "
        "forward, then backward; best of 3 repeats up to 10K tokens, 1 at 100K; each row in a fresh "
        "process (peak RSS = that process, Python and torch included). `loop` = the reference recurrence "
        "(`selective_scan_reference`, `model.scan = \"loop\"`); `chunked` = the default.",
        "",
        "| impl | tokens | batch | d_model | chunk | forward s | backward s | peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        chunk = "—" if r["chunk"] is None else str(r["chunk"])
        if "skipped" in r:
            lines.append(f"| {r['impl']} | {r['tokens']:,} | {r['batch']} | {r['d_model']} | {chunk} "
                         f"| skipped: {r['skipped']} | | |")
        else:
            lines.append(f"| {r['impl']} | {r['tokens']:,} | {r['batch']} | {r['d_model']} | {chunk} "
                         f"| {r['fwd_s']:.3f} | {r['bwd_s']:.3f} | {r['peak_rss_gb']:.2f} |")
    lines += ["", "## Conclusions (computed from the rows above)", "", *conclusions(rows, default), ""]
    if backbones:
        lines += ["## Backbones side by side", "",
                  "One training step of the backbone alone (forward + backward of the mean square of its "
                  "output), batch 8, d_model as above, 2 layers, defaults otherwise; fresh process per row.", "",
                  "| backbone | tokens | step s | peak RSS GB |", "|---|---:|---:|---:|"]
        for r in backbones:
            if "skipped" in r:
                lines.append(f"| {r['backbone']} | {r['tokens']:,} | skipped: {r['skipped']} | |")
            else:
                lines.append(f"| {r['backbone']} | {r['tokens']:,} | {r['step_s']:.3f} | {r['peak_rss_gb']:.2f} |")
        lines.append("")
    tmp = RESULTS / "scan.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(RESULTS / "scan.md")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("spec", nargs="?", help="(worker) JSON spec")
    parser.add_argument("--tokens", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--chunks", type=int, nargs="*", default=[16, 32, 64])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rss-gb", type=float, default=8.0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--backbones", action="store_true", help="add the backbones table")
    parser.add_argument("--backbone-tokens", type=int, nargs="*", default=[1_000, 4_000, 16_000])
    parser.add_argument("--shared", default="", help="a note on the machine's load, written into the results")
    args = parser.parse_args()
    if args.stage == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
        return
    from common import machine

    from rpgen.models.backbones import SCAN_CHUNK

    args.default = SCAN_CHUNK
    command = ("python bench/scan.py " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])).strip()
    rows = scan_rows(args)
    backbones = backbone_rows(args) if args.backbones else []
    write_results(rows, backbones, command=command, info=machine(), default=SCAN_CHUNK, shared=args.shared)


if __name__ == "__main__":
    main()
