"""Re-render the memory part of bench/results/peers.{md,json,png} and the README table from a new
``python bench/peers.py memory`` run (issue 14: the chunked scan), keeping the accuracy rows as they are.

    python bench/scan_peers.py --memory runs/peers/memory.json --command "python bench/peers.py memory ..." \
        [--note "machine shared ..."]

Writes the new points, the before/after comparison with the points it replaces and the issue's
three memory bars (all computed from the points).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from peers_report import WHY, memory_table, plot

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
README = ROOT.parent / "README.md"


def ok_points(points: list[dict], method: str) -> dict[int, dict]:
    return {p["params"]: p for p in points if p["method"] == method and "failed" not in p and "stopped" not in p
            and p.get("train_peak_rss_gb") is not None}


def near(points: dict[int, dict], size: float) -> dict | None:
    """The point whose parameter count is within 5% of ``size``."""
    return next((p for n, p in points.items() if abs(n - size) <= 0.05 * size), None)


def bars(points: list[dict]) -> list[str]:
    rpg, big, pdiff = ok_points(points, "rpg"), ok_points(points, "rpg (token 1024)"), ok_points(points, "pdiff")
    lines = []
    if pdiff:
        largest = max(pdiff)
        r = rpg.get(largest)
        if r is None:
            lines.append(f"- rpg (token 64) did not train at {largest:,} params, p-diff's largest trained size.")
        else:
            ratio = r["train_peak_rss_gb"] / pdiff[largest]["train_peak_rss_gb"]
            lines.append(f"- At {largest:,} params (p-diff's largest trained size) rpg (token 64) needs {ratio:.2f}x "
                         f"p-diff's peak RSS ({r['train_peak_rss_gb']:.2f} vs {pdiff[largest]['train_peak_rss_gb']:.2f}"
                         f" GB): bar <= 0.3x {'**met**' if ratio <= 0.3 else '**not met**'}.")
    for points_of, size, cap, label in ((rpg, 3e6, 4.0, "rpg (token 64)"), (big, 3e7, 8.0, "rpg (token 1024)")):
        p = near(points_of, size)
        if p is None:
            lines.append(f"- {label} did not train at {size / 1e6:g}M params: bar (under {cap:g} GB) **not met**.")
        else:
            verdict = "**met**" if p["train_peak_rss_gb"] < cap else "**not met**"
            lines.append(f"- {label} trains {p['params']:,} params at {p['train_peak_rss_gb']:.2f} GB peak RSS "
                         f"({p.get('step_s', float('nan')):.1f} s / step): bar (under {cap:g} GB) {verdict}.")
    return lines


def before_after(old: list[dict], new: list[dict]) -> list[str]:
    lines = ["| method | generated params | before (loop scan): peak RSS GB | after (chunked scan): peak RSS GB |",
             "|---|---:|---:|---:|"]
    cell = {(p["method"], p["params"]): p for p in old}

    def show(p: dict | None) -> str:
        if p is None:
            return "—"
        if p.get("train_peak_rss_gb") is None:
            return f"stopped: {p.get('failed') or p.get('stopped')}"
        return f"{p['train_peak_rss_gb']:.2f}"

    for p in new:
        if p["method"].startswith("rpg"):
            lines.append(f"| {p['method']} | {p['params']:,} | {show(cell.get((p['method'], p['params'])))} | {show(p)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=Path, required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    new = json.loads(args.memory.read_text())
    points = new["points"]
    data = json.loads((RESULTS / "peers.json").read_text())
    old = data["memory_vs_params"]
    table, _ = memory_table(points)
    plot(points, RESULTS / "peers_memory.png")
    bar_lines = bars(points)
    notes = sorted({f"{p['method']} at {p['params']:,}: {p['note']}" for p in points if p.get("note")})
    section = ["## Training memory vs parameter count", "",
               (f"Re-run with the chunked Mamba scan (issue 14): `{args.command}`. {args.note} Machine: "
                f"{new['machine'].get('cpu', '?')}, {new['machine'].get('cores', '?')} cores. A few training steps of "
                "each method on zoos of 8 random-initialised MLPs (64 → w → w → 10) of growing width, each in a fresh "
                "process; a method stops at the first size where it exceeds 8 GB (killed) or the step limit. `rpg` = "
                "quickstart preset (token 64, batch 8); `rpg (token 1024)` = the same with 1,024-value tokens; "
                "`pdiff` = the p-diff settings of the rows above (batch 8)."), "", table, "",
               *(["Notes: " + "; ".join(notes) + "."] if notes else []), "",
               "![memory vs params](peers_memory.png)", "", "Issue 14's memory bars (computed from the table):", "",
               *bar_lines, "", "Before and after (the points this run replaces were measured with the loop scan in the "
               "earlier run, on the machine named at the top of this file):", "", *before_after(old, points), ""]
    md = (RESULTS / "peers.md").read_text()
    start, end = md.index("## Training memory vs parameter count"), md.index("## The bar")
    md = md[:start] + "\n".join(section) + "\n" + md[end:]
    md = "\n".join(WHY[0] if line.startswith(WHY[0][:40]) else line for line in md.splitlines()
                   if not line.startswith(("- memory:", "- p-diff stopped at")))
    (RESULTS / "peers.md").write_text(md + "\n")
    data["memory_vs_params"] = points
    data["memory_command"] = args.command
    data["memory_note"] = args.note
    data["memory_machine"] = new["machine"]
    data["memory_bars"] = bar_lines
    (RESULTS / "peers.json").write_text(json.dumps(data, indent=1) + "\n")
    readme = README.read_text()
    pattern = re.compile(r"\| generated params \| rpg: peak RSS GB.*?\n\n", re.DOTALL)
    README.write_text(pattern.sub(lambda _: table + "\n\n", readme, count=1))
    print("\n".join(section))


if __name__ == "__main__":
    main()
