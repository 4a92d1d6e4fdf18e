"""Benchmark: the chunked selective scan against the loop (issue 14), and the backbones side by side.

    python bench/scan.py [--tokens 1000 10000 100000] [--batches 1 8] [--chunks 16 32 64]
                         [--max-rss-gb 8] [--backbones]

Each row runs in a fresh process (``worker``), so its peak RSS (VmHWM) is its own; the parent
kills a row above ``--max-rss-gb`` and records it as skipped. A scan row times
``selective_scan`` alone on the shapes one Mamba layer of width ``d_model`` gives it
(e = 2 d_model, n = d_state): forward, then backward of ``(y * w).sum()`` for a fixed random
``w``; the best of ``--repeats`` after one warm-up on 256 tokens. ``--backbones`` adds a
training step (forward + backward of the mean square of the output) of every backbone at a few
token counts. Writes bench/results/scan.{json,md} (through ``common.write_results``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import common
from common import Report, Table, peak_rss_gb, write_results

D_STATE = 16
FULL_TENSORS = 6
"""(b, l, e, n) float32 tensors the loop holds at its peak (decay, input, states, their stack, grads)."""


def parallel_scan(dt, A, B, C, x, *, chunk: int):
    """The selective scan with no loop over tokens: inside each chunk a Hillis-Steele doubling scan
    (log2(chunk) steps over the whole chunk), a loop over chunks carrying the state; backward by
    autograd. Bench-only: the candidate for taking Mamba-1's per-token loop out."""
    import torch

    b, l, e = x.shape
    h = x.new_zeros(b, e, A.shape[1])  # (b, e, n)
    ys = []
    for start in range(0, l, chunk):
        s = slice(start, min(start + chunk, l))
        a = torch.exp(dt[:, s].unsqueeze(-1) * A)  # (b, t, e, n)
        u = (dt[:, s] * x[:, s]).unsqueeze(-1) * B[:, s].unsqueeze(2)  # (b, t, e, n)
        u = torch.cat([u[:, :1] + a[:, :1] * h.unsqueeze(1), u[:, 1:]], dim=1)
        k = 1
        while k < u.shape[1]:  # after the step for k, position t holds the sum over its last 2k inputs
            u = torch.cat([u[:, :k], torch.addcmul(u[:, k:], a[:, k:], u[:, :-k])], dim=1)
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
            k *= 2
        h = u[:, -1]
        ys.append(torch.einsum("bten,btn->bte", u, C[:, s]))
    return torch.cat(ys, dim=1)


def worker(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    if spec["kind"] == "backbone":
        return backbone_worker(spec)
    from rpgen.models.mamba import selective_scan, selective_scan_reference

    b, l, e, n = spec["batch"], spec["tokens"], 2 * spec["d_model"], D_STATE

    def scan(*t):
        if spec["impl"] == "parallel":
            return parallel_scan(*t, chunk=spec["chunk"])
        return selective_scan_reference(*t) if spec["impl"] == "loop" else selective_scan(*t, chunk=spec["chunk"])[0]

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
    """Run :func:`worker` in a fresh process; a row it could not finish is ``{"skipped": why}``."""
    out = common.run_worker(__file__, spec, max_rss_gb=max_rss_gb, timeout_s=timeout_s, poll_s=0.1)
    return {"skipped": out["failed"]} if "failed" in out else out


def scan_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in args.batches:
        for tokens in args.tokens:
            impls = [("loop", None)] + [("chunked", c) for c in (args.chunks if tokens < 100_000 else [args.default])]
            impls += [("parallel", c) for c in args.parallel_chunks]
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
        for par in (r for r in same if r["impl"] == "parallel" and "skipped" not in r):
            lines.append(f"- batch {batch}, {tokens:,} tokens: the parallel scan inside chunks of {par['chunk']} "
                         f"(no per-token loop) takes {total(par):.3f} s forward + backward, "
                         f"{total(par) / total(new):.2f}x the chunked scan's {total(new):.3f} s (chunk {default}), "
                         f"at {par['peak_rss_gb']:.2f} GB peak RSS.")
        if "skipped" in loop:
            lines.append(f"- batch {batch}, {tokens:,} tokens: loop skipped ({loop['skipped']}); chunked scan "
                         f"(chunk {default}) {total(new):.2f} s forward + backward at {new['peak_rss_gb']:.2f} GB "
                         "peak RSS.")
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


def render(data: dict) -> Report:
    """The Markdown report, computed from scan.json's data alone."""
    rows, backbones, default = data["rows"], data.get("backbones", []), data["default_chunk"]
    table = []
    for r in rows:
        chunk = "—" if r["chunk"] is None else str(r["chunk"])
        cells = [r["impl"], f"{r['tokens']:,}", r["batch"], r["d_model"], chunk]
        if "skipped" in r:
            table.append([*cells, f"skipped: {r['skipped']}", "", ""])
        else:
            table.append([*cells, f"{r['fwd_s']:.3f}", f"{r['bwd_s']:.3f}", f"{r['peak_rss_gb']:.2f}"])
    sections = ["## Conclusions (computed from the rows above)\n\n" + "\n".join(conclusions(rows, default))]
    if backbones:
        sections.append(
            "## Backbones side by side\n\nOne training step of the backbone alone (forward + backward of the mean "
            "square of its output), batch 8, d_model as above, 2 layers, defaults otherwise; fresh process per "
            "row.\n\n" + Table(["backbone", "tokens", "step s", "peak RSS GB"], [
                [r["backbone"], f"{r['tokens']:,}", f"skipped: {r['skipped']}", ""] if "skipped" in r else
                [r["backbone"], f"{r['tokens']:,}", f"{r['step_s']:.3f}", f"{r['peak_rss_gb']:.2f}"]
                for r in backbones], "lrrr").markdown())
    shared = data.get("machine_shared", "").strip()
    return Report(
        title="Selective scan: chunked vs loop (CPU)",
        machine_note="torch threads per process" + (f". {shared.rstrip('.')}" if shared else ""),
        intro=(f"`selective_scan` alone (float32) on the shapes of one Mamba layer: e = 2 d_model, "
               f"n = {data['d_state']}; forward, then backward; best of 3 repeats up to 10K tokens, 1 at 100K; each "
               "row in a fresh process (peak RSS = that process, Python and torch included). `loop` = the reference "
               "recurrence (`selective_scan_reference`, `model.scan = \"loop\"`); `chunked` = the default."),
        table=Table(["impl", "tokens", "batch", "d_model", "chunk", "forward s", "backward s", "peak RSS GB"],
                    table, "lrrrrrrr"),
        sections=[*sections, *data.get("notes", [])],
    )


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
    parser.add_argument("--parallel-chunks", type=int, nargs="*", default=[],
                        help="also time parallel_scan (no per-token loop) at these chunk sizes")
    parser.add_argument("--backbones", action="store_true", help="add the backbones table")
    parser.add_argument("--backbone-tokens", type=int, nargs="*", default=[1_000, 4_000, 16_000])
    parser.add_argument("--shared", default="", help="a note on the machine's load, written into the results")
    args = parser.parse_args()
    if args.stage == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
        return
    from rpgen.models.mamba import SCAN_CHUNK

    args.default = SCAN_CHUNK
    command = ("python bench/scan.py " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])).strip()
    rows = scan_rows(args)
    backbones = backbone_rows(args) if args.backbones else []
    print(write_results("scan", {"command": command, "machine_shared": args.shared, "d_state": D_STATE,
                                 "default_chunk": SCAN_CHUNK, "rows": rows, "backbones": backbones}, render))


if __name__ == "__main__":
    main()
