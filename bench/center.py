"""Benchmark: data.center = element against tensor, the same zoos and commands otherwise.

    python bench/time_to_quality.py --set model.backbone=mamba2     # data.center = auto: element
    python bench/time_to_quality.py --variants plain --set model.backbone=mamba2 --set data.center=tensor \
        --name time_to_quality_tensor --no-quickstart
    python bench/center.py [--element time_to_quality] [--tensor time_to_quality_tensor]

Reads the two results files (the plain rows, matched by zoo) and writes bench/results/center.{json,md}:
the generated mean of each centring beside the checkpoints, and which one the zoos favour.
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS, Report, Table, write_results

SAME_WITHIN_PP = 0.3  # gaps this small are within the run-to-run spread of one setting (time_to_quality.md)


def compare(element: dict, tensor: dict) -> list[dict]:
    """One row per zoo that both files hold a plain run of."""
    by_zoo = {r["zoo"]: r for r in tensor["rows"] if r["variant"] == "plain"}
    rows = []
    for e in (r for r in element["rows"] if r["variant"] == "plain" and r["zoo"] in by_zoo):
        t = by_zoo[e["zoo"]]
        rows.append({"zoo": e["zoo"], "params": e["params"], "ckpt_mean": e["ckpt_mean"],
                     "element_mean": e["gen_mean"], "element_min": e["gen_min"], "element_steps": e["steps"],
                     "element_train_s": e["train_s"], "tensor_mean": t["gen_mean"], "tensor_min": t["gen_min"],
                     "tensor_steps": t["steps"], "tensor_train_s": t["train_s"]})
    return rows


def conclusions(rows: list[dict]) -> list[str]:
    lines, better, worse = [], 0, 0
    for r in rows:
        gap = r["element_mean"] - r["tensor_mean"]
        word = "same within noise" if abs(gap) <= SAME_WITHIN_PP else ("element better" if gap > 0 else "tensor better")
        better, worse = better + (gap > SAME_WITHIN_PP), worse + (gap < -SAME_WITHIN_PP)
        lines.append(f"- {r['zoo']}: element {r['element_mean']:.2f}, tensor {r['tensor_mean']:.2f} "
                     f"({gap:+.2f} pp: {word}); checkpoints {r['ckpt_mean']:.2f}.")
    lines.append(f"- Element centring is better on {better}, worse on {worse}, and the same within "
                 f"{SAME_WITHIN_PP} pp on {len(rows) - better - worse} of {len(rows)} zoos.")
    return lines


def render(data: dict) -> Report:
    table = [[r["zoo"], f"{r['params']:,}", f"{r['ckpt_mean']:.2f}",
              f"{r['element_mean']:.2f} / {r['element_min']:.2f}", f"{r['element_steps']:,}",
              f"{r['element_train_s']:.0f}", f"{r['tensor_mean']:.2f} / {r['tensor_min']:.2f}",
              f"{r['tensor_steps']:,}", f"{r['tensor_train_s']:.0f}"] for r in data["rows"]]
    return Report(
        title="Centring the tokens: per element against per tensor",
        commands=[data["element_command"], data["tensor_command"], data["command"]],
        intro=("The plain `rpgen train` on each zoo (Mamba-2 backbone), with `data.center = element` (tokens "
               "measured from the checkpoints' mean at each element) and `tensor` (from each tensor's scalar "
               "mean, the paper); then generated models evaluated beside the checkpoints. Accuracy in % "
               "(mean / min); train s wall-clock."),
        table=Table(["zoo", "params", "checkpoints", "element", "steps", "train s", "tensor", "steps", "train s"],
                    table, "lrrrrrrrr"),
        sections=["## Conclusions (computed from the rows above)\n\n" + "\n".join(conclusions(data["rows"]))],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--element", default="time_to_quality")
    parser.add_argument("--tensor", default="time_to_quality_tensor")
    args = parser.parse_args()
    element, tensor = (json.loads((RESULTS / f"{n}.json").read_text()) for n in (args.element, args.tensor))
    print(write_results("center", {"rows": compare(element, tensor), "element_command": element["command"],
                                   "tensor_command": tensor["command"], "machine": element["machine"]}, render))


if __name__ == "__main__":
    main()
