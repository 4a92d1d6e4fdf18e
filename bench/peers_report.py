"""Turn the outputs of ``bench/peers.py rows|memory`` into bench/results/peers.{md,json},
peers_memory.{md,json} and the plot (imported by ``bench/peers.py``; not a script).

``collect`` gathers every number the report states into the JSON; ``render`` computes the Markdown
from that JSON alone, conclusions included ("The bar", "Why"), so a rerun with other numbers
gets other sentences. The mechanisms in "Why" are read from the code and the settings.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from common import RESULTS, Report, Table, write_results

from rpgen.config import preset

# The settings of the benchmark, which bench/peers.py measures with and the reports state.
ABLATION_STEPS = 1000
PDIFF = ["model.method=pdiff", "pdiff.channels=[32, 64]", "pdiff.lr=2e-3", "pdiff.ae_steps=1500",
         "pdiff.denoiser_channels=[1, 16, 32, 16, 1]",
         "pdiff.ddpm_steps=1000"]
# memory vs parameter count: method label -> overrides on the quickstart preset
MEMORY_METHODS = {
    "rpg": [],
    "rpg (token 1024)": ["data.token_size=1024"],
    "pdiff": PDIFF,
}
MEMORY_SIZES = (10_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000)
MEMORY_STEPS = 3
MEMORY_CHECKPOINTS = 8

COMMANDS = ("python bench/peers.py rows (as three --only subsets in parallel; the rows ablation-mamba and "
            "pdiff-quickstart ran first with --num 50, the rest with the default 20); python bench/peers.py memory; "
            "python bench/peers.py memory --sizes 300000; python bench/peers.py report. Each under cpu-slot "
            "(one CPU core, OMP_NUM_THREADS=1)")
BROKEN_PP = 10.0  # generated models this far below the checkpoints' mean accuracy are called broken
ROW_KEYS = ("name", "method", "variant", "zoo", "overrides", "train_steps", "num_generated", "acc_mean", "acc_min",
            "acc_max", "acc_std", "novelty", "checkpoints_n", "checkpoints_acc_mean", "checkpoints_novelty",
            "train_s", "train_peak_rss_gb", "generate_s", "note", "failed")
ROW_HEADER = ["zoo", "method", "n", "generated accuracy % (mean / min / max)", "novelty (median)", "train s",
              "train peak RSS GB", "generate s / model"]


def _f(value, digits=2, suffix="") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _option(overrides: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), None)


# ----------------------------------------------------------------------------- numbers -> JSON

def _with_std(out: Path, row: dict) -> dict:
    """The row plus the generated models' accuracy std and count of checkpoints, from its results.json."""
    path = out / row["name"] / "generated" / "results.json"
    if path.is_file():
        summary = json.loads(path.read_text())["summary"]
        row = {**row, "acc_std": summary["generated"]["std"], "checkpoints_n": summary["checkpoints"]["n"]}
    return row


def settings() -> dict:
    """The settings the mechanisms in "Why" depend on (the quickstart preset the rows start from)."""
    cfg = preset("quickstart")
    return {
        "rpg": {"train_steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "token_size": cfg.data.token_size,
                "d_inner": cfg.model.expand * cfg.model.d_model,
                "d_state": cfg.model.d_state or 16},  # 0 = auto: 16 for the pure-PyTorch scan on CPU
        "scan": cfg.model.scan,
        "memory_token_sizes": {m: int(_option(o, "data.token_size") or cfg.data.token_size)
                               for m, o in MEMORY_METHODS.items() if _option(o, "model.method") != "pdiff"},
        "memory_checkpoints": MEMORY_CHECKPOINTS, "ablation_steps": ABLATION_STEPS,
    }


def _memorization(results: Path) -> dict | None:
    """What ``memorization.json`` measured on the diverse zoo (the "Why" section cites it)."""
    path = results / "memorization.json"
    if not path.is_file():
        return None
    diverse = json.loads(path.read_text()).get("diverse")
    if not diverse:
        return None
    return {"average_acc": diverse["summary"]["baselines"]["average"]["mean"],
            "num_checkpoints": diverse["summary"]["checkpoints"]["n"],
            "nearest_in_state_run": diverse["states"]["nearest_in_state_run"],
            "num_models": diverse["states"]["num_models"]}


def collect(out: Path, results: Path, *, rows: dict[str, str], max_rss_gb: float,
            max_step_s: float | None = None) -> dict:
    """Everything the report states, from ``out/NAME/row.json``, ``out/memory.json`` and the settings."""
    quickstart_steps = preset("quickstart").train.steps
    data = [{**_with_std(out, json.loads((out / name / "row.json").read_text())), "variant": label}
            for name, label in rows.items() if (out / name / "row.json").is_file()]
    mem = json.loads((out / "memory.json").read_text()) if (out / "memory.json").is_file() else {"points": []}
    machine = (data[0]["machine"] if data else mem.get("machine")) or {}
    for r in data:
        overrides = r.get("overrides", [])
        r.update(method=_option(overrides, "model.method") or "rpg",
                 train_steps=int(_option(overrides, "train.steps") or quickstart_steps))
    return {
        "command": COMMANDS, "machine": machine,
        "settings": {**settings(), "max_rss_gb": max_rss_gb, "max_step_s": max_step_s},
        "rows": [{k: r[k] for k in ROW_KEYS if k in r} for r in data],
        "memory_vs_params": [{"method": p["method"], "params": p["params"],
                              "train_peak_rss_gb": p.get("train_peak_rss_gb"), "step_s": p.get("step_s"),
                              **({"stopped": p["failed"], "seen_rss_gb": p.get("seen_rss_gb")}
                                 if "failed" in p else {})}
                             for p in mem["points"]],
        **({"memorization": m} if (m := _memorization(results)) else {}),
    }


def report(out: Path, results: Path = RESULTS, *, rows: dict[str, str], max_rss_gb: float,
           max_step_s: float | None = None) -> None:
    """``rows``: row name -> label shown in the tables."""
    data = collect(out, results, rows=rows, max_rss_gb=max_rss_gb, max_step_s=max_step_s)
    print(write_results("peers", data, render, results=results))
    if data["memory_vs_params"]:
        plot(data["memory_vs_params"], results / "peers_memory.png")


# ----------------------------------------------------------------------------- JSON -> Markdown

def _cells(r: dict) -> list[str]:
    if "failed" in r:
        return [r["zoo"], r["variant"], "", f"failed: {r['failed']}", "", "", "", ""]
    return [r["zoo"], r["variant"], str(r["num_generated"]),
            f"{_f(r['acc_mean'])} / {_f(r['acc_min'])} / {_f(r['acc_max'])}", _f(r["novelty"]),
            _f(r["train_s"], 0), _f(r["train_peak_rss_gb"]), _f(r["generate_s"], 3)]


def _ok(r: dict | None) -> bool:
    return bool(r) and r.get("acc_mean") is not None


def _broken(r: dict) -> bool:
    return r["acc_mean"] < r["checkpoints_acc_mean"] - BROKEN_PP


def _accuracy_verdict(r: dict, p: dict) -> str:
    """RPG vs p-diff mean accuracy, with the difference in standard errors of the two means."""
    diff = r["acc_mean"] - p["acc_mean"]
    se = math.sqrt(r.get("acc_std", 0) ** 2 / r["num_generated"] + p.get("acc_std", 0) ** 2 / p["num_generated"])
    sig = f"{abs(diff) / se:.1f} standard errors" if se > 0 else "no spread"
    verdict = "does not lose to" if diff >= 0 else "**loses to**"
    return f"RPG {r['acc_mean']:.2f}% mean vs p-diff {p['acc_mean']:.2f}% ({diff:+.2f} pp, {sig}): RPG {verdict} p-diff"


def memory_growth(points: list[dict]) -> dict:
    """Per method, the peak RSS growth (GB) from the smallest to the largest size p-diff trained."""
    ok = {m: {p["params"]: p["train_peak_rss_gb"] for p in points if p["method"] == m and "stopped" not in p}
          for m in dict.fromkeys(p["method"] for p in points)}
    if not ok.get("pdiff"):
        return {}
    smallest, largest = min(ok["pdiff"]), max(ok["pdiff"])
    return {"smallest": smallest, "largest": largest, "at_largest": {m: v.get(largest) for m, v in ok.items()},
            "growth": {m: v[largest] - v[smallest] if largest in v and smallest in v else None for m, v in ok.items()}}


def memory_table(points: list[dict]) -> Table:
    methods = list(dict.fromkeys(p["method"] for p in points))
    cell = {(p["method"], p["params"]): p for p in points}
    rows = []
    for n in sorted({p["params"] for p in points}):
        cells = [f"{n:,}"]
        for m in methods:
            p = cell.get((m, n))
            if p is None:
                cells.append("—")
            elif "stopped" in p:
                cells.append(f"stopped: {p['stopped']}")
            else:
                cells.append(f"{p['train_peak_rss_gb']:.2f} ({p.get('step_s') or float('nan'):.2f})")
        rows.append(cells)
    header = ["generated params", *(f"{m}: peak RSS GB (s / step)" for m in methods)]
    return Table(header, rows, "r" * len(header))


def the_bar(data: dict, by: dict) -> list[str]:
    points, bar = data["memory_vs_params"], []
    g = memory_growth(points)
    if g:
        for m in [k for k in g["growth"] if k.startswith("rpg")]:
            g_r, g_p = g["growth"][m], g["growth"]["pdiff"]
            if g_r is None or g_p is None:
                bar.append(f"- memory: {m} did not train at {g['largest']:,} params, the largest size p-diff trained.")
                continue
            ratio = g["at_largest"][m] / g["at_largest"]["pdiff"]
            verdict = "beats" if g_r < g_p else "**loses to**"
            bar.append(f"- memory: at {g['largest']:,} params (the largest p-diff trained) {m} needs "
                       f"{ratio:.2f}x p-diff's peak RSS; growth from {g['smallest']:,} params: {g_r:+.2f} GB vs "
                       f"{g_p:+.2f} GB: {m} {verdict} p-diff on memory growth.")
        stop = next((p for p in points if p["method"] == "pdiff" and "stopped" in p), None)
        if stop:
            at = ", ".join(f"{p['method']} {p['train_peak_rss_gb']:.2f} GB" for p in points
                           if p["params"] == stop["params"] and p["method"] != "pdiff" and "stopped" not in p)
            bar.append(f"- p-diff stopped at {stop['params']:,} params ({stop['stopped']}); trained there: "
                       f"{at or 'no RPG variant'}.")
    for zoo in ("quickstart", "diverse"):
        r, p = by.get(f"rpg-{zoo}"), by.get(f"pdiff-{zoo}")
        if _ok(r) and _ok(p):
            bar.append(f"- accuracy, {zoo} zoo: {_accuracy_verdict(r, p)}.")
    return bar


def why(data: dict, by: dict) -> list[str]:
    """Mechanisms (from the code and settings) tied to what the numbers show."""
    s, lines = data["settings"], []
    rpg = s["rpg"]
    per_param = rpg["batch_size"] * rpg["d_inner"] * rpg["d_state"] / rpg["token_size"]
    g = memory_growth(data["memory_vs_params"])
    growth = g.get("growth", {}) if g else {}
    if growth.get("rpg") is not None and growth.get("pdiff") is not None:
        faster = growth["rpg"] >= growth["pdiff"]
        measured = (f"Measured from {g['smallest']:,} to {g['largest']:,} parameters, RPG's peak RSS grew "
                    f"{growth['rpg']:+.2f} GB against p-diff's {growth['pdiff']:+.2f} GB, so with the quickstart "
                    f"preset RPG {'does not beat' if faster else 'beats'} p-diff on memory growth on this machine. ")
    else:
        measured = "RPG and p-diff were not both measured over the same sizes. "
    gpu = data["machine"].get("gpu")
    larger = {m: t for m, t in s["memory_token_sizes"].items() if t > rpg["token_size"]}
    tokens = "".join(f"With {t:,}-value tokens (`{m}`) the scan holds {t / rpg['token_size']:g}x fewer values per "
                     "parameter; what remains is mostly the denoiser's fixed cost (a token subset of constant size). "
                     for m, t in larger.items())
    scan = s.get("scan", "chunked")  # results that record no scan ran the loop scan
    holds = ("materialises tensors of shape (batch, tokens, d_inner, d_state) "
             f"= {rpg['batch_size']} x P/{rpg['token_size']} x {rpg['d_inner']} x {rpg['d_state']}, {per_param:g} "
             "values per generated parameter per tensor, several of them per layer plus their gradients. "
             if scan == "loop" else
             "is chunked (`model.scan = \"chunked\"`): training keeps about a dozen (batch, tokens, d_inner) "
             "tensors per layer plus one chunk's (batch, chunk, d_inner, d_state) tensors, and recomputes Mamba "
             "layers in backward when their activations would be large (`model.recompute`). ")
    lines.append(
        f"- **RPG memory with {rpg['token_size']}-value tokens (CPU).** The pure-PyTorch Mamba scan "
        "(`models/backbones.py`, `selective_scan`) " + holds + measured +
        "The mamba-ssm CUDA kernels do not materialise (batch, tokens, d_inner, d_state) tensors either; "
        + (f"this machine has a GPU ({gpu}) but these rows ran the CPU path. " if gpu
           else "they were not measured here (no GPU). ") + tokens.rstrip())
    lines.append("- **p-diff memory.** Its autoencoder convolves the whole flattened parameter vector, and its "
                 "latent (4 channels x P/4) is as long as that vector, so both stages hold activations proportional "
                 "to P for every checkpoint in the batch.")
    diverse = [(label, by.get(name)) for name, label in (("pdiff-diverse", "p-diff's unconditional latent DDPM"),
                                                          ("rpg-diverse", "RPG with the quickstart preset"),
                                                          ("mse-diverse", "The MSE head"))]
    if any(_ok(r) for _, r in diverse):
        mem = data.get("memorization")
        text = ("- **Diverse zoo (several training runs).** Checkpoints of independent runs differ by permutation "
                "symmetries, so averaging or mixing them need not give a working model")
        if mem:
            text += (f" (the average of the {mem['num_checkpoints']} checkpoints scores {mem['average_acc']:.2f}%, "
                     f"see `memorization.md`; RPG's permutation state does keep the runs apart there: for "
                     f"{mem['nearest_in_state_run']} of {mem['num_models']} generated models the nearest checkpoint "
                     "is in the run of the model's own state)")
        text += ". " + " ".join(
            f"{label}: {r['acc_mean']:.2f}% mean against {r['checkpoints_acc_mean']:.2f}% for the checkpoints, "
            + (f"broken (more than {BROKEN_PP:g} pp below)." if _broken(r) else f"within {BROKEN_PP:g} pp.")
            for label, r in diverse if _ok(r) and r.get("checkpoints_acc_mean") is not None)
        lines.append(text)
    qs = by.get("rpg-quickstart") or {}
    per_state = f" ({qs['checkpoints_n']} here)" if qs.get("checkpoints_n") else ""
    lines.append("- **No-diffusion (MSE) head.** One forward pass per permutation state: deterministic, so it can "
                 f"produce at most one model per training checkpoint{per_state}; the generated models repeat "
                 "whenever states repeat.")
    r, p = by.get("rpg-quickstart"), by.get("pdiff-quickstart")
    if _ok(r) and _ok(p) and r["acc_mean"] < p["acc_mean"]:
        lines.append("- **RPG below p-diff on the quickstart zoo.** The checkpoints of one run lie close together "
                     f"and both methods generate models at a similar distance from them (novelty {r['novelty']:.2f} "
                     f"vs {p['novelty']:.2f}); p-diff's mean is higher by the margin in the bar above. No cause was "
                     "measured; this comparison did not tune RPG's prediction target or sampling steps.")
    return lines


def _generate_note(rows: list[dict]) -> str:
    """How the per-model generation time of RPG rows with a different n compares (it was not investigated)."""
    rpg = [r for r in rows if r["method"] == "rpg" and r.get("generate_s") is not None]
    counts = statistics.multimode(r["num_generated"] for r in rpg) if rpg else []
    if not counts:
        return ""
    usual = counts[0]
    typical = statistics.median(r["generate_s"] for r in rpg if r["num_generated"] == usual)
    notes = [f"the n = {r['num_generated']} RPG row {r['name']} took {r['generate_s'] / typical:.0f}x the median "
             f"time per model of the n = {usual} RPG rows, not investigated"
             for r in rpg if r["num_generated"] != usual]
    return f"; {'; '.join(notes)}" if notes else ""


def render(data: dict) -> Report:
    rows, s = data["rows"], data["settings"]
    by = {r["name"]: r for r in rows}
    main_rows = [r for r in rows if not r["name"].startswith("ablation-")]
    ablations = [r for r in rows if r["name"].startswith("ablation-")]
    table = []
    for zoo in ("quickstart", "diverse"):
        zoo_rows = [r for r in main_rows if r["zoo"] == zoo]
        if zoo == "quickstart":
            zoo_rows += [r for r in ablations if r["name"] == "ablation-mse"]
        ck = next((r for r in zoo_rows if r.get("checkpoints_acc_mean") is not None), None)
        if ck:
            table.append([zoo, "*training checkpoints*", str(ck.get("checkpoints_n", "")),
                          f"{_f(ck['checkpoints_acc_mean'])} (mean)", _f(ck["checkpoints_novelty"]), "", "", ""])
        table += [_cells(r) for r in zoo_rows]
    sections = []
    notes = sorted({r["note"] for r in rows if r.get("note")})
    if notes:
        sections.append("Note: " + "; ".join(notes) + ".")
    if ablations:
        steps = "/".join(str(n) for n in dict.fromkeys(r["train_steps"] for r in ablations))
        sections += ["## RPG ablations (quickstart zoo, common budget)",
                     f"All rows trained for the same shorter budget ({steps} steps, quickstart preset otherwise) so "
                     f"they compare with each other; the {s['rpg']['train_steps']:,}-step RPG row above is the "
                     "default.",
                     Table(ROW_HEADER, [_cells(r) for r in ablations], "llrlrrrr").markdown()]
    if data["memory_vs_params"]:
        tokens = s["memory_token_sizes"]
        sections += ["## Training memory vs parameter count",
                     f"A few training steps of each method on zoos of {s['memory_checkpoints']} random-initialised "
                     "MLPs (64 → w → w → 10) of growing width, each in a fresh process; a method stops at the "
                     "first "
                     f"size where it exceeds {s['max_rss_gb']:g} GB (killed) or "
                     + (f"{s['max_step_s']:g} s per step. " if s.get("max_step_s") else "its step-time limit. ")
                     + "; ".join(f"`{m}` = quickstart preset (token {t}, batch {s['rpg']['batch_size']})"
                                 for m, t in tokens.items())
                     + f"; `pdiff` = the p-diff settings of the rows above (batch {s['rpg']['batch_size']}). "
                     "(The paper uses larger tokens for larger models.)",
                     memory_table(data["memory_vs_params"]).markdown(), "![memory vs params](peers_memory.png)"]
    if bar := the_bar(data, by):
        sections += ["## The bar", "\n".join(bar)]
    sections += ["## Why", "\n".join(why(data, by))]
    return Report(
        title="Peers side by side: RPG, p-diff, no-diffusion and RPG ablations (digits zoos)",
        machine_note="shared by four agents",
        intro=("Accuracy on the digits test split of the n generated models of each row (seed 0). Novelty = median "
               "over generated models of the distance to the nearest training checkpoint / the checkpoints' own "
               "nearest-neighbour distance (0 = copy, ~1 = as new as another checkpoint; from `rpgen evaluate`). "
               "Train s = wall time of training; peak RSS = VmHWM of a fresh training process; generate s / model = "
               f"generation wall time / n (all n models sampled together{_generate_note(rows)}). Times are on a "
               "shared 2-core machine and vary by tens of percent.\n\n## Methods"),
        table=Table(ROW_HEADER, table, "llrlrrrr"),
        sections=sections,
    )


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(p["method"] for p in points):
        ok = [p for p in points if p["method"] == method and "stopped" not in p]
        if ok:
            line, = ax.plot([p["params"] for p in ok], [p["train_peak_rss_gb"] for p in ok], "o-", label=method)
        failed = [p for p in points if p["method"] == method and "stopped" in p]
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


# ----------------------------------------------------------------------------- memory vs params alone

MEMORY_BARS = (("rpg", 3_000_000, 4.0), ("rpg (token 1024)", 30_000_000, 8.0))
"""(method, generated params, GB): the memory bars, "trains that many parameters under that peak RSS"."""
MEMORY_RATIO_BAR = 0.3
"""Issue 14: rpg (token 64) at most this fraction of p-diff's peak RSS at p-diff's largest trained size."""


def memory_report(points: list[dict], results: Path = RESULTS, *, name: str = "peers_memory", max_rss_gb: float,
                  max_step_s: float, note: str = "", commands: list[str] = ()) -> None:
    """bench/results/NAME.{md,json,png} from the points of ``peers.py memory`` (run by ``commands``)."""
    data = {"commands": list(commands),
            "settings": {**settings(), "max_rss_gb": max_rss_gb, "max_step_s": max_step_s}, "note": note,
            "points": [{**{k: v for k, v in p.items() if k != "failed"},
                        **({"stopped": p["failed"]} if "failed" in p else {})} for p in points]}
    print(write_results(name, {**data, "plot": f"{name}.png"}, render_memory, results=results))
    plot(data["points"], results / f"{name}.png")


def _near(points: list[dict], method: str, params: int) -> dict | None:
    """The point of ``method`` within 5% of ``params`` generated parameters."""
    return next((p for p in points if p["method"] == method and abs(p["params"] - params) <= 0.05 * params), None)


def memory_bars(points: list[dict]) -> list[str]:
    lines = []
    g = memory_growth(points)
    if g and g["at_largest"].get("rpg") is not None:
        ratio = g["at_largest"]["rpg"] / g["at_largest"]["pdiff"]
        lines.append(f"- At {g['largest']:,} params (the largest size p-diff trained) rpg (token 64) needs "
                     f"{ratio:.2f}x p-diff's peak RSS ({g['at_largest']['rpg']:.2f} vs {g['at_largest']['pdiff']:.2f} "
                     f"GB): bar <= {MEMORY_RATIO_BAR:g}x {'**met**' if ratio <= MEMORY_RATIO_BAR else '**not met**'}.")
    for method, params, gb in MEMORY_BARS:
        p = _near(points, method, params)
        if p is None or "stopped" in p:
            why = f" ({p['stopped']})" if p else ""
            lines.append(f"- {method} did not train at about {params:,} params{why}: bar (under {gb:g} GB) "
                         "**not met**.")
            continue
        ok = p["train_peak_rss_gb"] < gb
        lines.append(f"- {method} trains {p['params']:,} params at {p['train_peak_rss_gb']:.2f} GB peak RSS "
                     f"({p['step_s']:.1f} s / step): bar (under {gb:g} GB) {'**met**' if ok else '**not met**'}.")
    return lines


def estimate_table(points: list[dict]) -> Table | None:
    rows = [[p["method"], f"{p['params']:,}", f"{p['train_peak_rss_gb']:.2f}", f"{p['train_estimate_gb']:.2f}",
             f"{p['train_estimate_gb'] / p['train_peak_rss_gb'] - 1:+.0%}"]
            for p in points if p.get("train_estimate_gb") and "stopped" not in p]
    if not rows:
        return None
    return Table(["method", "generated params", "measured peak RSS GB", "rpgen's estimate GB", "estimate vs measured"],
                 rows, "lrrrr")


def render_memory(data: dict) -> Report:
    s, points = data["settings"], data["points"]
    tokens = s["memory_token_sizes"]
    sections = ["## Bars (issue 14, computed from the table)", "\n".join(memory_bars(points))]
    if table := estimate_table(points):
        errors = [float(row[-1].rstrip("%")) for row in table.rows]
        sections += ["## rpgen's memory estimate", "What `rpgen train` estimates before it starts (and checks against "
                     "the free RAM), against the measured peak: from "
                     f"{min(errors):+.0f}% to {max(errors):+.0f}%.", table.markdown()]
    sections.append(f"![memory vs params]({data.get('plot', 'peers_memory.png')})")
    return Report(
        title="Training memory vs parameter count: RPG and p-diff (CPU)", commands=data.get("commands", ()),
        machine_note=data.get("note", ""),
        intro=(f"A few training steps of each method on zoos of {s['memory_checkpoints']} random-initialised MLPs "
               "(64 → w → w → 10) of growing width, each in a fresh process (peak RSS = VmHWM of that process, Python "
               f"and torch included); a method stops at the first size where it exceeds {s['max_rss_gb']:g} GB "
               f"(killed) or {s['max_step_s']:g} s per step. "
               + "; ".join(f"`{m}` = quickstart preset (token {t}, batch {s['rpg']['batch_size']})"
                           for m, t in tokens.items())
               + f"; `pdiff` = the p-diff settings of `peers.md` (batch {s['rpg']['batch_size']})."),
        table=memory_table(points),
        sections=sections,
    )
