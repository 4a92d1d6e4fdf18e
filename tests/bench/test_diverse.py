"""bench/diverse.py and its zoo bench/diverse_mlp.py: bars computed from the numbers, the MLP zoo, its alignment.

"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import load_bench
from rpgen.align import permute, spec_from_model, weight_matching

BENCH = Path(__file__).parents[2] / "bench"


diverse = load_bench("diverse")
diverse_mlp = load_bench("diverse_mlp")
common = load_bench("common")


def row(zoo="digits-10", method="rpg", variant="default", **numbers):
    values = {"zoo": zoo, "runs": 10, "method": method, "variant": variant,
              "align": "weight-matching" if variant.startswith("aligned") else "none", "state": "checkpoint",
              "checkpoints": 50, "ckpt_mean": 98.0, "ckpt_min": 97.0, "generated": 20, "acc_mean": 97.5,
              "acc_min": 95.0, "acc_max": 98.5, "acc_se": 0.1, "novelty": 2.0, "noise_same_distance_acc": 90.0,
              "average_acc": 10.0, "train_s": 1000.0, "train_peak_rss_gb": 0.6,
              "beats_noise": True, "margin": 7.5, "standard_error": 0.5, "d_model": 128, "lr": 0.003,
              "steps": 3000, "final_loss": 0.01}
    return {**values, **numbers}


def data(rows):
    return {"command": "python bench/diverse.py", "commands": ["python bench/diverse.py"], "machine": {"cores": 2},
            "rows": rows, "midpoint": {"digits-10": {"pairs": 9, "endpoint_mean": 98.0, "naive": 20.0,
                                                     "aligned": 60.0, "naive_bn_reset": 40.0,
                                                     "aligned_bn_reset": 95.0}},
            "noise_curve": {"digits-10": [[0.5, 98.0], [3.0, 90.0], [40.0, 10.0]]}}


def bars_of(text: str) -> dict[str, str]:
    """Each bar's title -> its text (its line and the rows' lines under it)."""
    section = text.split("## Bars\n\n", 1)[1].split("\n\n", 1)[0]
    return {bar.split(":")[0]: "- " + bar for bar in section.removeprefix("- ").split("\n- ")}


def test_bars_follow_the_numbers_and_a_missing_row_says_not_run():
    meets = row()  # within 1 pp of the mean, 2 pp of the min, 1,000 s, novelty 2, beats noise
    misses = row(variant="aligned", acc_mean=96.5, beats_noise=False)  # 1.5 pp below the mean
    text = common.markdown(diverse.render(data([meets, misses])), data([meets, misses]))
    bars = bars_of(text)
    assert "**met**" in bars["10-run digits, default rpg"]
    assert "acc_mean 97.50 ≥ 97.00 (ckpt_mean 98.00 − 1) yes" in bars["10-run digits, default rpg"]
    assert bars["50-run digits, default rpg"].endswith(": not run")
    assert "**met**" in bars["New models (any rpg row on digits-10)"]  # rpg-default meets it; rpg-aligned does not
    assert "rpg-aligned: novelty 2.00 ≥ 1.50 yes; acc_mean 96.50 ≥ 97.00 (ckpt_mean 98.00 − 1) NO" in text

    slow = row(train_s=2000.0, acc_min=93.5, novelty=1.2)  # misses the bar and, by novelty, the aim
    text = common.markdown(diverse.render(data([slow, misses])), data([slow, misses]))
    bars = bars_of(text)
    assert "**NOT met**" in bars["10-run digits, default rpg"]
    assert "acc_min 93.50 ≥ 94.00 (ckpt_min 97.00 − 3) NO" in bars["10-run digits, default rpg"]
    assert "train_s 2000.00 ≤ 1800.00 NO" in bars["10-run digits, default rpg"]
    assert "**NOT met**" in bars["New models (any rpg row on digits-10)"] and "novelty 1.20 ≥ 1.50 NO" in text

    fifty = row(zoo="digits-50", runs=50, acc_mean=96.5, train_s=5000.0)  # 1.5 pp below: within the 2 pp bar
    bars = bars_of(common.markdown(diverse.render(data([fifty])), data([fifty])))
    assert "**met**" in bars["50-run digits, default rpg"]
    assert bars["10-run digits, default rpg"].endswith(": not run")
    assert bars["New models (any rpg row on digits-10)"].endswith(": not run")


def test_the_table_the_midpoints_and_the_plot_come_from_the_data(tmp_path):
    pdiff = row(method="pdiff", d_model=None, steps=2500, stage_steps=[1500, 1000], beats_noise=None, margin=None,
                standard_error=None)
    text = common.markdown(diverse.render(data([row(), pdiff])), data([row(), pdiff]))
    assert "| digits-10 | 10 | pdiff | default | none | checkpoint | 98.00 / 97.00 | 97.50 / 95.00 | 2.00 |" in text
    assert "| — | 0.003 | 1500+1000 |" in text
    assert "| digits-10 | 9 | 98.00 | 20.00 | 60.00 | 40.00 | 95.00 |" in text
    assert "![accuracy vs novelty per zoo](diverse_frontier.png)" in text
    diverse.plot(data([row(), pdiff]), tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_rows_merge_by_zoo_method_and_variant():
    old = [row(variant="aligned"), row(acc_mean=1.0), row(zoo="mlp-10")]
    merged = diverse.merge_rows(old, [row(acc_mean=2.0), row(variant="default-mix0.1")])
    assert [(r["zoo"], r["variant"], r["acc_mean"]) for r in merged] == [
        ("digits-10", "default", 2.0), ("digits-10", "aligned", 97.5), ("digits-10", "default-mix0.1", 97.5),
        ("mlp-10", "default", 97.5)]


def test_the_mlp_zoo_loads_into_its_model_and_its_evaluator_scores_it(tmp_path):
    paths = diverse_mlp.collect_mlp(tmp_path / "zoo", num_checkpoints=2, runs=2, seed=0)
    assert [p.name for p in paths] == ["r00_0000.safetensors", "r01_0000.safetensors"]
    model = diverse_mlp.DigitsMLP()
    assert 5000 < sum(p.numel() for p in model.parameters()) < 7000
    for path in paths:
        state_dict = load_file(path)
        model.load_state_dict(state_dict, strict=True)
        result = diverse_mlp.evaluate(state_dict)
        assert result["accuracy"] > 80 and len(result["per_example"]) == 540
        assert result["accuracy"] == pytest.approx(100 * sum(result["per_example"]) / 540)


def test_the_mlp_traces_and_alignment_keeps_its_outputs():
    spec = spec_from_model(diverse_mlp.DigitsMLP())
    assert spec.groups == {"P1": diverse_mlp.HIDDEN, "P2": diverse_mlp.HIDDEN}
    torch.manual_seed(0)
    a, b = diverse_mlp.DigitsMLP(), diverse_mlp.DigitsMLP()
    for norm in (b.norm1, b.norm2):  # LayerNorm vectors that are not all ones / zeros, so a wrong move shows
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    aligned = diverse_mlp.DigitsMLP()
    aligned.load_state_dict(permute(b.state_dict(), spec, weight_matching(a.state_dict(), b.state_dict(), spec)))
    x = torch.rand(16, 1, 8, 8)
    assert not torch.equal(aligned.fc1.weight, b.fc1.weight)  # the units moved
    torch.testing.assert_close(aligned(x), b(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (BENCH / "results" / "diverse.json").is_file(), reason="no bench/results/diverse.json yet")
def test_the_committed_report_is_what_its_json_renders_to():
    result = subprocess.run([sys.executable, str(BENCH / "common.py"), "--check", "diverse"], capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((BENCH / "results" / "diverse.json").read_text())["rows"]
