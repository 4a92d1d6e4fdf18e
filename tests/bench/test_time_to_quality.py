"""bench/time_to_quality.py and bench/center.py: rows merged across runs, bars computed from the rows."""

from conftest import load_bench

ttq = load_bench("time_to_quality")
center = load_bench("center")


def row(zoo, variant, **values):
    base = {"zoo": zoo, "variant": variant, "params": 6000, "train_s": 100.0, "steps": 1000, "schedule": 2000,
            "ckpt_mean": 98.0, "gen_mean": 97.5, "gen_min": 97.0, "noise_mean": 97.0}
    return {**base, **values}


def test_an_update_replaces_only_the_pairs_it_measured_again():
    old = {"command": "python bench/time_to_quality.py", "rows": [row("a", "plain"), row("a", "evaluator")],
           "quickstart": {"wall_s": 40}, "collect_s": {"a": 5.0}}
    new = {"rows": [row("a", "evaluator", gen_mean=98.0), row("b", "plain")], "quickstart": None,
           "collect_s": {"b": 7.0}}
    merged = ttq.updated(old, new)
    assert [(r["zoo"], r["variant"], r["gen_mean"]) for r in merged["rows"]] == [
        ("a", "plain", 97.5), ("a", "evaluator", 98.0), ("b", "plain", 97.5)]
    assert merged["quickstart"] == {"wall_s": 40} and merged["collect_s"] == {"a": 5.0, "b": 7.0}
    assert merged["commands"][0] == "python bench/time_to_quality.py" and len(merged["commands"]) == 2


def test_conclusions_follow_the_numbers():
    rows = [row("a", "plain", train_s=300.0, average_mean=97.9),
            row("a", "evaluator", steps=400, train_s=100.0, gen_mean=97.4)]
    lines = ttq.conclusions({"rows": rows, "quickstart": {"wall_s": 95, "gen_mean": 98, "ckpt_mean": 98.2}})
    assert "generated mean -0.50 pp" in lines[0] and "**met**" in lines[0] and "(bar <= 240 s: **not met**)" in lines[0]
    assert "the average of the checkpoints, scores 97.90 (-0.40 pp)" in lines[0]
    assert "2.5x fewer steps" in lines[2] and "bar >= 2x sooner at <= 0.3 pp lower: **met**" in lines[2]
    assert "47" not in lines[3] and "(bar <= 90 s: **not met**)" in lines[3]


def test_centring_comparison_matches_zoos_and_names_the_better_one():
    element = {"rows": [row("a", "plain", gen_mean=98.0), row("b", "plain", gen_mean=90.0),
                        row("a", "evaluator")]}
    tensor = {"rows": [row("a", "plain", gen_mean=97.9), row("b", "plain", gen_mean=95.0)]}
    rows = center.compare(element, tensor)
    assert [(r["zoo"], r["element_mean"], r["tensor_mean"]) for r in rows] == [("a", 98.0, 97.9), ("b", 90.0, 95.0)]
    lines = center.conclusions(rows)
    assert "same within noise" in lines[0] and "tensor better" in lines[1]
    assert lines[-1].startswith("- Element centring is better on 0, worse on 1, and the same")
