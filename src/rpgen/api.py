"""The Python API: the functions the ``rpgen`` command line calls, for notebooks and scripts.

    import rpgen

    rpgen.collect("digits", "zoo", num=20)                      # or your own checkpoint folder
    rpgen.train("zoo", "run", config="quickstart", overrides=["train.steps=500"])
    rpgen.generate("run", "generated", num=10, seed=0)          # files, streamed
    result = rpgen.evaluate("run", "generated", "rpgen.zoo.digits:evaluate")
    print(result.verdict)
    models = rpgen.load_run("run").sample(4, seed=1)           # state dicts in memory

:func:`run_quickstart` is ``rpgen quickstart``: the four steps on the built-in digits zoo.

Errors are :class:`rpgen.RpgenError` with the same one-line messages as the CLI; progress bars
(rich) work in terminals and notebooks and are turned off with ``progress=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from rpgen.config import Config, Sampler, config_from
from rpgen.generation.loaded import Run
from rpgen.generation.loaded import load_run as _load_run


def train(checkpoints: str | Path, out: str | Path, *, config: Config | str | Path | None = None,
          overrides: Sequence[str] = (), resume: bool = False, overwrite: bool = False,
          progress: bool = True, device: str = "auto") -> Path:
    """Train a generator on a checkpoint folder; returns the run directory ``out``.

    ``config``: a :class:`~rpgen.config.Config`, a TOML file, or a preset name ("quickstart",
    ...); ``overrides``: ``"section.key=value"`` strings as ``--set`` takes them. With ``resume``,
    the run continues from its saved state with its own config (only ``[train]`` overrides apply).
    ``device``: "auto" (a GPU when there is one), "cpu" or "cuda".
    """
    from rpgen.training import saved_config
    from rpgen.training import train as train_run

    cfg = config_from(saved_config(Path(out)) if resume else config, overrides)
    return train_run(checkpoints, out, cfg, resume=resume, overwrite=overwrite, progress=progress, device=device)


def generate(run: str | Path, out: str | Path, *, num: int, seed: int = 0, sampler: Sampler | None = None,
             steps: int | None = None, states: Sequence[int] | None = None,
             conditions: Sequence[Sequence[float]] | None = None, overwrite: bool = False,
             progress: bool = True, mix: float | None = None, temperature: float | None = None,
             device: str = "auto") -> list[Path]:
    """Write ``num`` generated models (per condition, for a conditional run) to ``out``; returns their
    paths. ``mix``: each model from a mixture of two states of different training runs;
    ``temperature``: the standard deviation of the starting noise (default: the run's
    ``sample.temperature``: 1 for an unconditional run, 0.25 for a conditional one); ``device``:
    "auto" (a GPU when there is one), "cpu" or "cuda"."""
    from rpgen.generation import generate as generate_models

    return generate_models(run, out, num=num, seed=seed, sampler=sampler, steps=steps, states=states,
                           conditions=conditions, overwrite=overwrite, progress=progress, mix=mix,
                           temperature=temperature, device=None if device == "auto" else device)


def evaluate(run: str | Path, generated: str | Path, evaluator: str, *, baselines: bool = True, seed: int = 0,
             progress: bool = True) -> Any:
    """Evaluate checkpoints, generated models and baselines; writes results.json and report.md into
    ``generated`` and returns the typed result."""
    from rpgen.evaluation import evaluate_run

    return evaluate_run(run, generated, evaluator, with_baselines=baselines, seed=seed, progress=progress)


def load_run(run: str | Path, *, device: str | torch.device = "cpu") -> Run:
    """A finished run; ``load_run(path).sample(n, seed=...)`` returns new state dicts in memory."""
    return _load_run(run, device=device)


def collect(zoo: str, out: str | Path, *, num: int | None = None, seed: int = 0, overwrite: bool = False,
            progress: bool = True, **options: Any) -> Path:
    """Build one of the built-in checkpoint zoos in ``out`` (``rpgen collect --help`` lists them and
    their options, e.g. ``runs=10`` for digits); returns the folder, ready for :func:`train`."""
    from rpgen.zoo import collect as collect_zoo

    collect_zoo(zoo, out, num=num, seed=seed, overwrite=overwrite, progress=progress, **options)
    return Path(out)


QUICKSTART_EVALUATOR = "rpgen.zoo.digits:evaluate"
QUICKSTART_CHECKPOINTS = 50
QUICKSTART_ENTRIES = ("checkpoints", "run", "generated", "report.md")
"""What ``rpgen quickstart`` writes into its folder (its provenance, rpgen.safety.overwrite)."""


def run_quickstart(out: str | Path, *, num: int = 10, seed: int = 0, overrides: Sequence[str] = (),
                   overwrite: bool = False, progress: bool = True,
                   announce: Callable[[str], None] = lambda _: None) -> tuple[Any, dict[str, float]]:
    """digits zoo -> train -> generate -> evaluate under ``out``, timed per stage; returns the
    evaluation result and the seconds of each stage (what ``rpgen quickstart`` prints)."""
    import json
    import shutil
    import time

    from rpgen.config import apply_overrides, preset
    from rpgen.evaluation.report import format_report
    from rpgen.safety.atomic import check_output_dir, make_folder, write_text_atomic
    from rpgen.safety.overwrite import mark
    from rpgen.zoo.digits import collect_digits

    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    # scored while it trains, the generator stops once its models are as good as the checkpoints
    # (200-300 of the preset's 1,000 steps on this zoo, bench/results/time_to_quality.md)
    config = apply_overrides(preset("quickstart"), [f"train.seed={seed}",
                                                    f"train.evaluator={json.dumps(QUICKSTART_EVALUATOR)}", *overrides])
    if out.exists():
        shutil.rmtree(out)
    make_folder(out)
    mark(out, later=QUICKSTART_ENTRIES)
    times: dict[str, float] = {}

    def stage(name: str, title: str, fn: Callable[[], Any]) -> Any:
        announce(title)
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        return value

    stage("collect", f"1/4  collect: {QUICKSTART_CHECKPOINTS} checkpoints of a BatchNorm CNN on scikit-learn digits",
          lambda: collect_digits(out / "checkpoints", num_checkpoints=QUICKSTART_CHECKPOINTS, seed=seed,
                                 progress=progress))
    stage("train", "2/4  train the generator",
          lambda: train(out / "checkpoints", out / "run", config=config, progress=progress))
    stage("generate", f"3/4  generate {num} models",
          lambda: generate(out / "run", out / "generated", num=num, seed=seed, progress=progress))
    results = stage("evaluate", "4/4  evaluate on the held-out test split",
                    lambda: evaluate(out / "run", out / "generated", QUICKSTART_EVALUATOR, progress=progress))
    write_text_atomic(out / "report.md", format_report(results, plots_at="generated/"))
    return results, times
