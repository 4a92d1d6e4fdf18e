"""The quickstart pipeline: digits zoo -> train -> generate -> evaluate, timed per stage."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from rpgen.config import apply_overrides, preset
from rpgen.evaluation import EvaluationResult, evaluate_run
from rpgen.evaluation.report import format_report
from rpgen.files import check_output_dir, write_text_atomic
from rpgen.generation import generate
from rpgen.training import train
from rpgen.zoo.digits import collect_digits

EVALUATOR = "rpgen.zoo.digits:evaluate"
NUM_CHECKPOINTS = 50


def run_quickstart(out: str | Path, *, num: int = 10, seed: int = 0, overrides: list[str] = (),
                   overwrite: bool = False, progress: bool = True,
                   announce: Callable[[str], None] = lambda _: None) -> tuple[EvaluationResult, dict[str, float]]:
    """Run every stage under ``out``; return the evaluation results and seconds per stage."""
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    config = apply_overrides(preset("quickstart"), [f"train.seed={seed}", *overrides])
    if out.exists():
        shutil.rmtree(out)
    times: dict[str, float] = {}

    def stage(name: str, title: str, fn: Callable[[], Any]) -> Any:
        announce(title)
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        return value

    stage("collect", f"1/4  collect: {NUM_CHECKPOINTS} checkpoints of a BatchNorm CNN on scikit-learn digits",
          lambda: collect_digits(out / "checkpoints", num_checkpoints=NUM_CHECKPOINTS, seed=seed, progress=progress))
    stage("train", "2/4  train the generator",
          lambda: train(out / "checkpoints", out / "run", config, progress=progress))
    stage("generate", f"3/4  generate {num} models",
          lambda: generate(out / "run", out / "generated", num=num, seed=seed, progress=progress))
    results = stage("evaluate", "4/4  evaluate on the held-out test split",
                    lambda: evaluate_run(out / "run", out / "generated", EVALUATOR, progress=progress))
    write_text_atomic(out / "report.md", format_report(results, plots_at="generated/"))
    return results, times
