"""The README's "use your own checkpoints" example, run line by line as a user would."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- example:own-checkpoints -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README lost its own-checkpoints example"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_example_has_the_four_steps():
    lines = readme_example()
    assert [shlex.split(line)[:2] for line in lines] == [
        ["python", "examples/own_checkpoints/make_checkpoints.py"], ["rpgen", "train"],
        ["rpgen", "generate"], ["rpgen", "evaluate"]]
    assert not any("--set" in line or "--config" in line for line in lines), "the example uses the default config"


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for line in readme_example():
        args = shlex.split(line)
        if args[0] == "python":
            args[0] = sys.executable
        elif args[0] == "rpgen":
            args = [sys.executable, "-m", "rpgen.cli", *args[1:], "--no-progress"]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    results = json.loads((tmp_path / "runs/mlp/generated/results.json").read_text())
    assert len(results["checkpoints"]) == 30 and len(results["generated"]) == 10
    # The generated models work: far above chance (10%) for ten classes.
    assert min(results["generated"]) > 80.0, results["generated"]
    sd = load_file(tmp_path / "runs/mlp/generated/0000.safetensors")
    assert set(sd) == set(load_file(next((tmp_path / "runs/mlp/checkpoints").glob("*.safetensors"))))


def python_api_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- example:python-api -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its Python API example"
    return block.group(1)


def test_python_api_example_is_short_and_uses_the_api():
    code = python_api_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    for call in ("rpgen.train(", "rpgen.generate(", "rpgen.evaluate(", "rpgen.load_run("):
        assert call in code, call


@pytest.mark.slow
def test_python_api_example_runs(tmp_path):
    """The notebook example as a user would paste it: a script run in a fresh interpreter."""
    script = tmp_path / "example.py"
    script.write_text(python_api_example(), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Generated models are" in result.stdout  # the verdict
    assert len(list((tmp_path / "runs/nb/generated").glob("*.safetensors"))) == 10


@pytest.mark.parametrize("doc", ["README.md", "bench/README.md", "ARCHITECTURE.md"])
def test_each_section_appears_once(doc):
    """A merge once left two copies of bench/README's sections, each with half of the updates."""
    headings = [line for line in (ROOT / doc).read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)), sorted(h for h in headings if headings.count(h) > 1)
