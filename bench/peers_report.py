"""Turn the outputs of ``bench/peers.py rows|memory`` into bench/results/peers.{md,json} and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

COMMANDS = ("python bench/peers.py rows (as three --only subsets in parallel; the rows ablation-mamba and "
            "pdiff-quickstart ran first with --num 50, the rest with the default 20); python bench/peers.py memory; "
            "python bench/peers.py memory --sizes 300000; python bench/peers.py report. Each under /work/cpu-slot "
            "(one CPU core, OMP_NUM_THREADS=1)")
# Mechanisms behind the measurements (read from the code; the numbers are in the tables above).
WHY = [
    ("- **RPG memory with 64-value tokens (CPU).** The pure-PyTorch Mamba scan (`models/backbones.py`, "
    "`selective_scan`) is chunked (issue 14): training keeps about a dozen (batch, tokens, d_inner) tensors per "
    "layer plus one chunk's (batch, chunk, d_inner, d_state) tensors, and Mamba layers are recomputed in backward "
    "when their activations would pass 256 MiB (`model.recompute = \"auto\"`). The earlier loop materialised "
    "(batch, tokens, d_inner, d_state) tensors, 256 values per generated parameter per tensor with the quickstart "
    "preset, so RPG's memory grew as fast as p-diff's. The mamba-ssm CUDA kernels were not measured here (no GPU). "
    "With 1,024-value tokens what remains is mostly the denoiser's fixed cost (a token subset of constant size)."),
    ("- **p-diff memory.** Its autoencoder convolves the whole flattened parameter vector, and its latent (4 "
    "channels x P/4) is as long as that vector, so both stages hold activations proportional to P for every "
    "checkpoint in the batch."),
    ("- **Diverse zoo (10 runs).** Checkpoints of independent runs differ by permutation symmetries; averaging "
    "or mixing them breaks models (the average of the 50 checkpoints scores chance, see "
    "`memorization.md`). p-diff's unconditional latent DDPM mixes the runs and produces broken models; RPG's "
    "permutation state keeps the runs apart, but the quickstart preset underfits this zoo (a known finding, "
    "reported as is), and the MSE head's models are broken too (see the table)."),
    ("- **No-diffusion (MSE) head.** One forward pass per permutation state: deterministic, so it can produce at "
    "most one model per training checkpoint (50 here); the generated models repeat whenever states repeat."),
]
JSON_KEYS = ("method", "zoo", "acc_mean", "acc_min", "novelty", "train_s", "train_peak_rss_gb", "generate_s")


def _f(value, digits=2, suffix="") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _row_line(r: dict) -> str:
    if "failed" in r:
        return f"| {r['zoo']} | {r['method']} | | failed: {r['failed']} | | | | |"
    return (f"| {r['zoo']} | {r['method']} | {r['num_generated']} | {_f(r['acc_mean'])} / {_f(r['acc_min'])} / {_f(r['acc_max'])} | "
            f"{_f(r['novelty'])} | {_f(r['train_s'], 0)} | {_f(r['train_peak_rss_gb'])} | {_f(r['generate_s'], 3)} |")


HEADER = ("| zoo | method | n | generated accuracy % (mean / min / max) | novelty (median) | train s | "
          "train peak RSS GB | generate s / model |\n|---|---|---:|---|---:|---:|---:|---:|")


def memory_table(points: list[dict]) -> tuple[str, dict]:
    methods = list(dict.fromkeys(p["method"] for p in points))
    sizes = sorted({p["params"] for p in points})
    cell = {(p["method"], p["params"]): p for p in points}
    lines = ["| generated params | " + " | ".join(f"{m}: peak RSS GB (s / step)" for m in methods) + " |",
             "|---:|" + "---:|" * len(methods)]
    for n in sizes:
        cells = []
        for m in methods:
            p = cell.get((n, m)[::-1])
            if p is None:
                cells.append("—")
            elif "failed" in p:
                cells.append(f"stopped: {p['failed']}")
            else:
                cells.append(f"{p['train_peak_rss_gb']:.2f} ({p.get('step_s', float('nan')):.2f})")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    ok = {m: [p for p in points if p["method"] == m and "failed" not in p] for m in methods}
    return "\n".join(lines), ok


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(p["method"] for p in points):
        ok = [p for p in points if p["method"] == method and "failed" not in p]
        if ok:
            line, = ax.plot([p["params"] for p in ok], [p["train_peak_rss_gb"] for p in ok], "o-", label=method)
        failed = [p for p in points if p["method"] == method and "failed" in p]
        for p in failed:
            ax.plot([p["params"]], [p.get("seen_rss_gb") or (ok[-1]["train_peak_rss_gb"] if ok else 0)], "x",
                    color=line.get_color() if ok else "k", markersize=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("generated parameters")
    ax.set_ylabel("peak training RSS (GB)")
    ax.set_title("training memory vs model size (x = stopped)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _with_std(out: Path, row: dict) -> dict:
    """The row plus the generated models' accuracy std, from the evaluation's results.json."""
    path = out / row["name"] / "generated" / "results.json"
    if path.is_file():
        row = {**row, "acc_std": json.loads(path.read_text())["summary"]["generated"]["std"]}
    return row


def _accuracy_verdict(r: dict, p: dict) -> str:
    """RPG vs p-diff mean accuracy, with the difference in standard errors of the two means."""
    diff = r["acc_mean"] - p["acc_mean"]
    se = math.sqrt(r.get("acc_std", 0) ** 2 / r["num_generated"] + p.get("acc_std", 0) ** 2 / p["num_generated"])
    sig = f"{abs(diff) / se:.1f} standard errors" if se > 0 else "no spread"
    verdict = "does not lose to" if diff >= 0 else "**loses to**"
    return f"RPG {r['acc_mean']:.2f}% mean vs p-diff {p['acc_mean']:.2f}% ({diff:+.2f} pp, {sig}): RPG {verdict} p-diff"


def _method(row: dict) -> str:
    """rpg, mse or pdiff, from the row's overrides."""
    return next((o.split("=", 1)[1] for o in row.get("overrides", []) if o.startswith("model.method=")), "rpg")


def report(out: Path, results: Path, *, rows: dict[str, str], max_rss_gb: float) -> None:
    """``rows``: row name -> label shown in the tables."""
    data = [{**_with_std(out, json.loads((out / name / "row.json").read_text())), "method": label}
            for name, label in rows.items() if (out / name / "row.json").is_file()]
    mem = json.loads((out / "memory.json").read_text()) if (out / "memory.json").is_file() else {"points": []}
    points = mem["points"]
    machine = (data[0]["machine"] if data else mem.get("machine")) or {}
    main_rows = [r for r in data if not r["name"].startswith("ablation-")]
    ablations = [r for r in data if r["name"].startswith("ablation-")]
    by = {r["name"]: r for r in data}

    md = ["# Peers side by side: RPG, p-diff, no-diffusion and RPG ablations (digits zoos)", "",
          f"Command: `{COMMANDS}`  ",
          (f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores (shared by four agents), "
          f"torch {machine.get('torch', '?')}, {machine.get('torch_threads', '?')} torch thread."), "",
          ("Accuracy on the digits test split of the n generated models of each row (seed 0). Novelty = median over "
          "generated models of the distance to the nearest training checkpoint / the checkpoints' own "
          "nearest-neighbour distance (0 = copy, ~1 = as new as another checkpoint; from `rpgen.evaluate`). "
          "Train s = wall time of training; peak RSS = VmHWM of a fresh training process; generate s / model = "
          "generation wall time / n (all n models sampled together; the one n = 50 RPG row took 4x longer per model "
          "than the n = 20 rows of the same denoiser, not investigated). Times are on a shared 2-core machine and vary by tens of percent."), "",
          "## Methods", "", HEADER]
    for zoo in ("quickstart", "diverse"):
        zoo_rows = [r for r in main_rows if r["zoo"] == zoo]
        if zoo == "quickstart":
            zoo_rows += [r for r in ablations if r["name"] == "ablation-mse"]
        if zoo_rows:
            ck = next((r for r in zoo_rows if "checkpoints_acc_mean" in r), None)
            if ck:
                md.append(f"| {zoo} | *training checkpoints* | 50 | {_f(ck['checkpoints_acc_mean'])} (mean) | "
                          f"{_f(ck['checkpoints_novelty'])} | | | |")
        md += [_row_line(r) for r in zoo_rows]
    notes = sorted({r["note"] for r in data if r.get("note")})
    md += ["", *(["Note: " + "; ".join(notes) + "."] if notes else []), ""]
    if ablations:
        md += ["## RPG ablations (quickstart zoo, common budget)", "",
               (f"All rows trained for the same shorter budget ({ablations[0]['overrides'][-1].split('=')[1]} steps, "
               "quickstart preset otherwise) so they compare with each other; the 2,000-step RPG row above is "
               "the default."), "", HEADER]
        md += [_row_line(r) for r in ablations]
        md.append("")

    table, ok = memory_table(points)
    md += ["## Training memory vs parameter count", "",
           (f"A few training steps of each method on zoos of 8 random-initialised MLPs (64 → w → w → 10) of growing "
           f"width, each in a fresh process; a method stops at the first size where it exceeds {max_rss_gb:g} GB "
           "(killed) or 120 s per step. `rpg` = quickstart preset (token 64, batch 8); `rpg (token 1024)` = the "
           "same with 1,024-value tokens (the paper uses larger tokens for larger models); `pdiff` = the p-diff "
           "settings of the rows above (batch 8)."), "", table, "", "![memory vs params](peers_memory.png)", ""]
    bar = []
    if ok.get("pdiff") and ok.get("rpg"):
        largest = ok["pdiff"][-1]["params"]
        rpg_at = {p["params"]: p for p in ok["rpg"]}
        smallest = min(p["params"] for p in ok["pdiff"])

        def growth(m, n):
            pts = {p["params"]: p["train_peak_rss_gb"] for p in ok[m]}
            return pts[n] - pts[smallest] if n in pts and smallest in pts else None

        for m in [k for k in ok if k.startswith("rpg") and ok[k]]:
            g_r, g_p = growth(m, largest), growth("pdiff", largest)
            if g_r is None or g_p is None:
                bar.append(f"- memory: {m} did not train at {largest:,} params, the largest size p-diff trained.")
                continue
            ratio = {p["params"]: p["train_peak_rss_gb"] for p in ok[m]}[largest] / ok["pdiff"][-1]["train_peak_rss_gb"]
            verdict = "beats" if g_r < g_p else "**loses to**"
            bar.append(f"- memory: at {largest:,} params (the largest p-diff trained) {m} needs "
                       f"{ratio:.2f}x p-diff's peak RSS; growth from {smallest:,} params: {g_r:+.2f} GB vs "
                       f"{g_p:+.2f} GB: {m} {verdict} p-diff on memory growth.")
        stop = next((p for p in points if p["method"] == "pdiff" and "failed" in p), None)
        if stop:
            at = ", ".join(f"{m} {rpg_at[stop['params']]['train_peak_rss_gb']:.2f} GB" if m == "rpg" else
                           f"{m} {p['train_peak_rss_gb']:.2f} GB"
                           for m in ok if m != "pdiff"
                           for p in ok[m] if p["params"] == stop["params"])
            bar.append(f"- p-diff stopped at {stop['params']:,} params ({stop['failed']}); trained there: "
                       f"{at or 'no RPG variant'}.")
    for zoo in ("quickstart", "diverse"):
        r, p = by.get(f"rpg-{zoo}"), by.get(f"pdiff-{zoo}")
        if r and p and "acc_mean" in r and "acc_mean" in p:
            bar.append(f"- accuracy, {zoo} zoo: {_accuracy_verdict(r, p)}.")
    if bar:
        md += ["## The bar", "", *bar, ""]
    why = list(WHY)
    r, p = by.get("rpg-quickstart"), by.get("pdiff-quickstart")
    if r and p and "acc_mean" in r and "acc_mean" in p and r["acc_mean"] < p["acc_mean"]:
        why.append("- **RPG below p-diff on the quickstart zoo.** The 50 checkpoints of one run lie close together "
                   "and both methods generate models at a similar distance from them (novelty column); p-diff's "
                   "mean is higher by the margin in the bar above. No cause was measured; DESIGN.md §1 records that "
                   "RPG's accuracy here depends on the precision of the last denoising steps (prediction target, "
                   "steps), which this comparison did not tune.")
    md += ["## Why", "", *why, ""]
    (results / "peers.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    if points:
        plot(points, results / "peers_memory.png")
    out_json = {
        "command": COMMANDS, "machine": machine,
        "rows": [{**{k: r.get(k) for k in JSON_KEYS}, "method": _method(r), "variant": r["method"],
                  "acc_max": r.get("acc_max"), "name": r["name"], "num_generated": r.get("num_generated"),
                  **({"failed": r["failed"]} if "failed" in r else {})} for r in data],
        "memory_vs_params": [{"method": p["method"], "params": p["params"],
                              "train_peak_rss_gb": p.get("train_peak_rss_gb"), "step_s": p.get("step_s"),
                              **({"stopped": p["failed"]} if "failed" in p else {})} for p in points],
    }
    (results / "peers.json").write_text(json.dumps(out_json, indent=1) + "\n", encoding="utf-8")
    print((results / "peers.md").read_text())
