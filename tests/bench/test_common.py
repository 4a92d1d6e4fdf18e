"""bench/common.py, the one results writer (imported by path: bench/ is scripts, not a package)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
_spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
common = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = common  # the importlib recipe: dataclasses look their module up while it loads
_spec.loader.exec_module(common)

# Every results file rendered from its JSON (peers.md waits for a rerun of `bench/peers.py report`,
# whose JSON then holds every number it states).
RENDERED = ("quickstart", "sampling", "scale", "memorization", "unseen_tasks", "adapters", "scan", "hf", "diverse",
            "unseen_multimodal", "unseen_multimodal_sampling", "unseen_multimodal_default",
            "unseen_multimodal_sized", "peers_memory", "scale_scan", "step_time", "time_to_quality",
            "time_to_quality_tensor", "center")


def render(data: dict):
    return common.Report(
        title="Toy", intro=f"{len(data['rows'])} rows.",
        table=common.Table(["name", "value"], [[r["name"], f"{r['value']:.2f}"] for r in data["rows"]], "lr"),
        sections=[f"Best: {max(data['rows'], key=lambda r: r['value'])['name']}."])


def test_write_results_writes_json_and_the_markdown_rendered_from_it(tmp_path):
    data = {"rows": [{"name": "a", "value": 1.0}, {"name": "b", "value": 2.5}], "out": str(tmp_path / "x" / "run")}
    text = common.write_results("toy", {**data, "command": "python bench/toy.py --out /somewhere/else/run"}, render,
                                results=tmp_path)
    written = json.loads((tmp_path / "toy.json").read_text())
    assert list(written)[:2] == ["command", "machine"] and written["machine"]["cores"] == os.cpu_count()
    assert written["command"] == "python bench/toy.py --out .../run" and written["out"] == ".../run"
    assert (tmp_path / "toy.md").read_text() == text == common.markdown(render(written), written)
    assert "| name | value |\n|---|---:|\n| a | 1.00 |\n| b | 2.50 |" in text and "Best: b." in text
    assert text.startswith("# Toy\n\nCommand: `python bench/toy.py --out .../run`  \nMachine: ")


def test_a_render_error_leaves_the_old_files(tmp_path):
    common.write_results("toy", {"rows": [{"name": "a", "value": 1.0}]}, render, results=tmp_path)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    with pytest.raises(KeyError):
        common.write_results("toy", {"rows": [{"name": "a"}]}, render, results=tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_paths_become_portable_and_ratios_stay():
    inside = common.REPO / "runs" / "memorization" / "run"
    assert common.portable_path(inside) == "runs/memorization/run"
    expected = "--run runs/memorization/run --out .../sampling"
    assert common.portable(f"--run {inside} --out /tmp/bench/sampling") == expected
    text = "8 x P/64 x 128, mean / min / max, see https://arxiv.org/abs/2501.11587 and bench/results/x.md"
    assert common.portable(text) == text
    assert common.portable({"a": ["/home/me/x/y", 3]}) == {"a": [".../y", 3]}
    assert common.command_line([str(BENCH / "scale.py"), "--work", "/tmp/w/s"]) == "python bench/scale.py --work .../s"


def test_table_checks_its_shape():
    with pytest.raises(ValueError, match="one l/r per column"):
        common.Table(["a", "b"], [], "l")
    with pytest.raises(ValueError, match="has 1 cells for 2 columns"):
        common.Table(["a", "b"], [["x"]], "lr")


def test_every_committed_report_is_what_its_json_renders_to():
    """Run as the scripts run (``python bench/common.py``), so bench/ is importable without path edits."""
    result = subprocess.run([sys.executable, str(BENCH / "common.py"), "--check", *RENDERED],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (*RENDERED, "peers"):
        for suffix in (".json", ".md"):
            text = (BENCH / "results" / f"{name}{suffix}").read_text()
            assert not common.ABSOLUTE_PATH.search(text), (name, suffix)
