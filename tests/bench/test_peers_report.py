"""bench/peers_report.py: its conclusions follow the numbers in the JSON, not typed prose.

Run in a subprocess from bench/ (as ``python bench/...`` runs it), so its ``from common import ...``
works without path edits.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"

SCRIPT = r"""
import json, sys
import common, peers_report

def row(name, zoo, acc, ck, n=20, gen=1.6):
    method = name.split("-")[0] if not name.startswith("ablation") else "rpg"
    return {"name": name, "method": method, "variant": name, "zoo": zoo, "overrides": [], "train_steps": 2000,
            "num_generated": n, "acc_mean": acc, "acc_min": acc - 1, "acc_max": acc + 1, "acc_std": 0.5,
            "novelty": 3.0, "checkpoints_n": 50, "checkpoints_acc_mean": ck, "checkpoints_novelty": 1.0,
            "train_s": 100.0, "train_peak_rss_gb": 0.5, "generate_s": gen}

def points(rpg_big):
    return [{"method": "rpg", "params": 10_000, "train_peak_rss_gb": 0.6, "step_s": 1.0},
            {"method": "pdiff", "params": 10_000, "train_peak_rss_gb": 0.5, "step_s": 1.0},
            {"method": "rpg", "params": 300_000, "train_peak_rss_gb": rpg_big, "step_s": 2.0},
            {"method": "pdiff", "params": 300_000, "train_peak_rss_gb": 4.0, "step_s": 2.0},
            {"method": "pdiff", "params": 1_000_000, "train_peak_rss_gb": None, "step_s": None, "stopped": "over 8 GB"}]

out = {}
for case, (rpg_acc, diverse_acc, rpg_big) in {"rpg wins": (98.9, 97.0, 1.0), "rpg loses": (98.0, 20.0, 6.0)}.items():
    rows = [row("rpg-quickstart", "quickstart", rpg_acc, 98.6), row("pdiff-quickstart", "quickstart", 98.5, 98.6),
            row("rpg-diverse", "diverse", diverse_acc, 98.3), row("pdiff-diverse", "diverse", 9.7, 98.3),
            row("ablation-mamba", "quickstart", 98.3, 98.6, n=50, gen=6.4)]
    data = {"command": "python bench/peers.py report", "machine": {"cpu": "x", "cores": 2, "torch_threads": 1},
            "settings": {**peers_report.settings(), "max_rss_gb": 8.0, "max_step_s": 120.0},
            "rows": rows, "memory_vs_params": points(rpg_big)}
    out[case] = common.markdown(peers_report.render(data), data)
json.dump(out, sys.stdout)
"""


def test_the_bar_and_why_follow_the_numbers():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=BENCH, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    wins, loses = reports["rpg wins"], reports["rpg loses"]
    assert "accuracy, quickstart zoo: RPG 98.90% mean vs p-diff 98.50% (+0.40 pp" in wins
    assert "RPG does not lose to p-diff." in wins and "RPG **loses to** p-diff." in loses
    assert "rpg beats p-diff on memory growth" in wins and "rpg **loses to** p-diff on memory growth" in loses
    assert "RPG's peak RSS grew +0.40 GB against p-diff's +3.50 GB, so with the quickstart preset RPG beats" in wins
    assert "RPG does not beat p-diff on memory growth" in loses
    assert "RPG with the quickstart preset: 97.00% mean against 98.30% for the checkpoints, within 10 pp" in wins
    assert "RPG with the quickstart preset: 20.00% mean against 98.30% for the checkpoints, broken" in loses
    assert "RPG below p-diff on the quickstart zoo" in loses and "RPG below p-diff" not in wins
    assert "the n = 50 RPG row ablation-mamba took 4x the median time per model of the n = 20 RPG rows" in wins
    assert "p-diff stopped at 1,000,000 params (over 8 GB)" in wins
