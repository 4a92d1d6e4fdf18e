"""The README's short results table, computed from ``bench/results/*.json`` (never typed by hand).

    python bench/readme_results.py           # rewrite the block in README.md
    python bench/readme_results.py --check   # exit 1 if README.md's block is out of date

The block sits between ``<!-- results:begin -->`` and ``<!-- results:end -->``; every number in it
comes from a results file named in its row (bench/README.md is the index of those files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def rows() -> list[tuple[str, str, str, str, str]]:
    """(what, trained, generated, best model-free baseline, source) per row; accuracy in %."""
    out = []
    quick = _load("quickstart")["runs"]
    out.append((f"quickstart, digits CNN, one training run ({len(quick)} seeds)",
                f"{_mean([_mean(r['checkpoints']) for r in quick]):.2f}",
                f"{_mean([_mean(r['generated']) for r in quick]):.2f}", "",
                "quickstart"))
    memo = _load("memorization")
    for key, what in (("quickstart", "one training run"), ("diverse", "10 training runs, quickstart preset")):
        s = memo[key]["summary"]
        noise = s["baselines"].get("noise_matched")
        out.append((f"digits CNN, {what}: generated vs checkpoints + noise at the same distance",
                    f"{s['checkpoints']['mean']:.2f}", f"{s['generated']['mean']:.2f}",
                    f"{noise['mean']:.2f} (noise)" if noise else "", "memorization"))
    diverse = {(r["zoo"], r["method"], r["variant"]): r for r in _load("diverse")["rows"]}
    for key, what in ((("digits-10", "rpg", "default"), "digits CNN, 10 training runs, default `rpgen train`"),
                      (("digits-10", "rpg", "aligned"), "digits CNN, 10 training runs, `--align weight-matching`"),
                      (("digits-10", "pdiff", "default"), "p-diff, digits CNN, 10 training runs"),
                      (("digits-50", "rpg", "default"), "digits CNN, 50 training runs, default `rpgen train`"),
                      (("mlp-10", "rpg", "default"), "LayerNorm MLP (not a built-in zoo), 10 training runs, default")):
        if key in diverse:
            r = diverse[key]
            noise = r.get("noise_same_distance_acc")
            out.append((what + " (vs noise at the same distance)", f"{r['ckpt_mean']:.2f}", f"{r['acc_mean']:.2f}",
                        f"{noise:.2f} (noise)" if noise is not None else "", "diverse"))
    peers = {r["name"]: r for r in _load("peers")["rows"]}
    for zoo in ("quickstart", "diverse"):
        rpg, pdiff = peers.get(f"rpg-{zoo}"), peers.get(f"pdiff-{zoo}")
        if rpg and pdiff:
            preset = " (quickstart preset)" if zoo == "diverse" else ""
            out.append((f"RPG vs p-diff, {zoo} digits zoo{preset}", "", f"{rpg['acc_mean']:.2f}",
                        f"{pdiff['acc_mean']:.2f} (p-diff)", "peers"))
    tasks = _load("unseen_tasks")
    unseen = tasks["heldout"]
    at = f", temperature {tasks['temperature']:g} (the default)" if "temperature" in tasks else ""
    out.append((f"unseen digit tasks ({len(unseen['tasks'])} held out), conditional{at}",
                f"{unseen['trained_mean']:.2f}", f"{unseen['generated_mean']:.2f}",
                f"{unseen['linear_map_mean']:.2f} (linear map)", "unseen_tasks"))
    multimodal = _load("unseen_multimodal")
    for split in ("heldout",):
        block = multimodal[split]
        out.append((f"unseen digit tasks, multimodal zoo ({len(block['tasks'])} held out, "
                    f"{multimodal['modes_per_task']} modes per task), {multimodal['train']['rpg']['steps']:,} "
                    "training steps (the sizing of the time), sampled at temperature 1",
                    f"{block['trained_mean']:.2f}",
                    f"{block['generated_mean']:.2f}",
                    f"{block['mse_mean']:.2f} (mse, same command); {block['linear_map_mean']:.2f} (linear map)",
                    "unseen_multimodal"))
        if "rpg_condition_only_mean" in block:
            out.append(("the same, condition only (`data.states=none`): per-token noise picks the modes",
                        f"{block['trained_mean']:.2f}", f"{block['rpg_condition_only_mean']:.2f}",
                        f"{block['mse_condition_only_mean']:.2f} (mse, condition only)", "unseen_multimodal"))
    default = _load("unseen_multimodal_sized")
    block = default["heldout"]
    maps = block["mode_map_means"]
    best = max(maps, key=maps.get)
    out.append((f"the same zoo collected again (another CPU), default train ({default['train']['rpg']['steps']:,} "
                f"steps) and generate (temperature {default['train']['rpg']['temperature']:g})",
                f"{block['trained_mean']:.2f}", f"{block['generated_mean']:.2f}",
                f"{block['mse_mean']:.2f} (mse, same command); {block['linear_map_mean']:.2f} (linear map); "
                f"{maps[best]:.2f} (degree-{best} map given the mode)", "unseen_multimodal_sized"))
    hf = _load("hf")["rows"]
    for key, what in (("tiny-gpt2", "tiny-gpt2 Trainer zoo (transformers folders), 1,000 generator steps"),
                      ("deep-default", "12-layer GPT-2 zoo, sharded save_pretrained folders, default config")):
        if key in hf:
            out.append((what, f"{hf[key]['ckpt']['mean']:.2f}", f"{hf[key]['gen']['mean']:.2f}", "", "hf"))
    ttq = {(r["zoo"], r["variant"]): r for r in _load("time_to_quality")["rows"]}
    tensor = {r["zoo"]: r for r in _load("time_to_quality_tensor")["rows"]}
    for zoo, what in (("tiny-gpt2", "tiny-gpt2 Trainer zoo, one run"),
                      ("tiny-vit", "tiny ViT (not a built-in zoo), 4 seeds"),
                      ("digits-10", "digits CNN, 10 training runs")):
        for variant in ("plain", "evaluator"):
            r = ttq.get((zoo, variant))
            if r is None:
                continue
            how = "`rpgen train`" if variant == "plain" else "`rpgen train --evaluator`"
            base = [f"{r['average_mean']:.2f} (average)"] if r.get("average_mean") is not None else []
            if variant == "plain" and zoo in tensor:
                base.append(f"{tensor[zoo]['gen_mean']:.2f} (tokens centred per tensor)")
            out.append((f"{what}, Mamba-2, {how}: {r['train_s']:.0f} s, {r['steps']:,} steps",
                        f"{r['ckpt_mean']:.2f}", f"{r['gen_mean']:.2f}", "; ".join(base), "time_to_quality"))
    adapters = _load("adapters")["rows"]
    worst = min(adapters, key=lambda r: r["generated_mean"] - r["trained_mean"])
    within = sum(abs(r["generated_mean"] - r["trained_mean"]) <= 0.5 for r in adapters)
    out.append((f"MiniLM LoRA/DoRA adapters: {within} of {len(adapters)} configs within 0.5 pp; worst: "
                f"{worst['kind']} rank {worst['rank']}", f"{worst['trained_mean']:.2f}",
                f"{worst['generated_mean']:.2f}", f"{worst['base_acc']:.2f} (no adapter)", "adapters"))
    return out


def table() -> str:
    lines = ["| result | trained | generated | baseline | source |", "|---|---:|---:|---:|---|"]
    lines += [f"| {what} | {trained} | {generated} | {base} | [`{src}`](bench/results/{src}.md) |"
              for what, trained, generated, base, src in rows()]
    return "\n".join(lines) + "\n"


def updated(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table() + readme[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print("README.md's results table is out of date: run python bench/readme_results.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
