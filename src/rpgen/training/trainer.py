"""Training, method-agnostic (Hugging Face Accelerate): :func:`train` opens the checkpoint set once,
resolves every "auto" setting (:mod:`rpgen.training.resolve`), starts the run directory, aligns
the checkpoints when asked (:mod:`rpgen.align`) and runs the stages its method
(:mod:`rpgen.methods`) yields through one fit loop (:mod:`rpgen.training.fit`).

It runs the same on one CPU, one GPU (bf16 autocast) or several processes under
``accelerate launch`` (DDP, for methods that support it). Only the main process writes files.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

import rpgen.run_dir as runfiles
import rpgen.training.stopping as stopping
from rpgen.config import Config
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.lineage import Lineage
from rpgen.data.tokenizer import Layout
from rpgen.data.tokens import tokens_fit_in_memory
from rpgen.display import progress_bar
from rpgen.errors import RpgenError
from rpgen.formats.safetensors_io import read_tensors
from rpgen.generation.loaded import in_training
from rpgen.methods import Method, TrainingSet, get_method
from rpgen.methods.memory import training_disk
from rpgen.safety.atomic import atomic_path, check_output_dir, write_text_atomic
from rpgen.safety.locks import run_lock
from rpgen.safety.overwrite import check_not_overlapping
from rpgen.safety.resources import check_resources
from rpgen.training.fit import FitLoop, deferred_interrupt
from rpgen.training.loss_plot import plot_loss
from rpgen.training.plan import plan_lines
from rpgen.training.resolve import Facts, auto_center, resolve
from rpgen.training.state import check_unchanged, resumed_config, saved_config


def train(checkpoint_dir: str | Path, run_dir: str | Path, config: Config | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None, device: str = "auto") -> Path:
    """Train a model of ``config.model.method`` on the checkpoints in ``checkpoint_dir``; write ``run_dir``.

    With ``resume``, continue ``run_dir`` from its last saved state with the run's own
    config.toml; only the ``[train]`` section of ``config`` may differ (e.g. more steps, a lower
    learning rate), and config.toml then records it. Ctrl-C finishes the current step, saves a
    resumable state and raises KeyboardInterrupt (a second Ctrl-C stops at once). ``stop_after``
    ends this call after that many steps with a resumable state, as if interrupted (time-boxed
    training); the run is then unfinished. Training stops with an error at the first loss or
    gradient norm that is not finite.

    Checkpoints are opened lazily and read in one streaming pass for the statistics; a step of a
    token-wise method then reads only the tokens it needs (all tokens are held in RAM when they
    fit in ``data.tokens_in_memory_mb``; both give the same run). Under ``accelerate launch``
    with P processes, each process takes ``batch_size / P`` checkpoints and ``diffusion_batch / P``
    tokens per step, so the effective batch and the learning dynamics match one process.

    If ``checkpoint_dir`` holds a ``conditions.json`` (checkpoint file -> vector, see
    :mod:`rpgen.data.conditions`), the generator is conditional: it learns to produce a checkpoint
    from its condition vector instead of its permutation state.
    """
    from accelerate import PartialState

    run_dir, checkpoint_dir = Path(run_dir), Path(checkpoint_dir)
    check_not_overlapping(run_dir, {"checkpoint folder": checkpoint_dir})
    if device not in ("auto", "cpu", "cuda"):
        raise RpgenError(f"--device {device!r}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RpgenError("--device cuda: this machine has no CUDA device; use --device cpu")
    # Without an accelerator, several processes (torchrun / accelerate launch --multi_gpu) form a
    # gloo group only when Accelerate is told to use the CPU; `accelerate launch --cpu` starts one process.
    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    with run_lock(run_dir) if state.is_main_process else nullcontext():  # one training process group per run
        return _train(checkpoint_dir, run_dir, config, state=state, resume=resume, overwrite=overwrite,
                      progress=progress, stop_after=stop_after, cpu=cpu)


@dataclass(frozen=True)
class _Start:
    """What a run starts from: its resolved config, the checkpoint set and what was read of it."""

    config: Config
    checkpoints: CheckpointSet
    layout: Layout
    conditions: torch.Tensor | None
    lineage: Lineage
    sizing: dict
    state_of: torch.Tensor  # (K,) permutation state of each checkpoint
    memory: int | None  # the RAM training needs per process (bytes), when the method estimates it


def _train(checkpoint_dir: Path, run_dir: Path, config: Config | None, *, state, resume: bool, overwrite: bool,
           progress: bool, stop_after: int | None, cpu: bool) -> Path:
    from accelerate import Accelerator

    if resume:
        saved = saved_config(run_dir)
        config = saved if config is None else resumed_config(saved, config, run_dir=run_dir)
    else:
        check_output_dir(run_dir, overwrite=overwrite)
    config = config or Config()
    if config.data.align != "none":  # the run trains on, and is evaluated against, its aligned copies
        _check_align(config)
    method = get_method(config.model.method)
    if not method.distributed and (resume or stop_after is not None):
        raise RpgenError(f"config model.method = {method.name!r} cannot --resume or stop early; train it again")
    start = _start(CheckpointSet.open(checkpoint_dir, order=config.data.tensor_order), config, method,
                   run_dir=run_dir, state=state, resume=resume)
    accelerator = Accelerator(mixed_precision=start.config.train.mixed_precision, cpu=cpu)
    checkpoints = _start_run_dir(start, run_dir, accelerator=accelerator, resume=resume, overwrite=overwrite,
                                 progress=progress)
    model, loop = _fit(start, method, checkpoints, run_dir, accelerator=accelerator, resume=resume,
                       stop_after=stop_after, progress=progress)
    if loop is None:
        return run_dir  # stopped early with a resumable state
    if accelerator.is_main_process:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        weights.update(loop.ema_weights(model))
        if loop.stopper is not None and loop.stopper.best is not None:  # the best generator evaluated
            weights = read_tensors(run_dir / stopping.BEST)
        with atomic_path(run_dir / method.weights_file) as tmp:
            save_file(weights, str(tmp))
        runfiles.RunDir(run_dir).record_stop(loop.stop_record(total=start.config.train.steps))
        (run_dir / stopping.BEST).unlink(missing_ok=True)
        plot_loss(run_dir / runfiles.METRICS, run_dir / runfiles.LOSS_PLOT)
    accelerator.wait_for_everyone()
    return run_dir


def _start(checkpoints: CheckpointSet, config: Config, method: Method, *, run_dir: Path, state, resume: bool
           ) -> _Start:
    """Read what the run needs of the checkpoint set, resolve the config, check RAM and disk."""
    center = auto_center(config)
    layout = checkpoints.layout(config.data.token_size, center=center, base=config.data.base or None)
    conditions = checkpoints.conditions if method.takes_conditions else None
    if resume:
        check_unchanged(run_dir, checkpoints, layout, conditions)
    lineage = checkpoints.lineage(layout, estimate=conditions is None)
    if state.num_processes > 1 and not method.distributed:
        raise RpgenError(f"config model.method = {method.name!r} trains in one process only "
                         f"(started with {state.num_processes})")
    folder = run_dir / runfiles.ALIGNED if config.data.align != "none" else checkpoints.folder
    config, sizing = resolve(config, Facts(folder=folder, num_params=layout.num_params, lineage=lineage,
                                           conditions=conditions, method=method, device=state.device,
                                           resume=resume))
    count = len(checkpoints)
    state_of = {"run": torch.tensor(lineage.index), "checkpoint": torch.arange(count),
                "none": torch.zeros(count, dtype=torch.long)}[config.data.states]  # (K,)
    if resume and state.is_main_process:
        write_text_atomic(run_dir / runfiles.CONFIG, config.to_toml())  # records the new [train] settings
    in_memory = tokens_fit_in_memory(count, layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
    memory = method.training_memory(config, layout, num_checkpoints=count, num_processes=state.num_processes,
                                    in_memory=in_memory)
    if state.device.type == "cpu" and memory is not None:  # CPU RAM is what an OOM kill takes
        check_resources(f"training on {checkpoints.folder} ({layout.num_params:,} parameters, {count} checkpoints)",
                        memory=memory * state.num_processes,
                        disk=training_disk(config, layout, num_checkpoints=count), disk_path=run_dir)
    return _Start(config, checkpoints, layout, conditions, lineage, sizing, state_of, memory)


def _start_run_dir(start: _Start, run_dir: Path, *, accelerator, resume: bool, overwrite: bool,
                   progress: bool) -> CheckpointSet:
    """Write the run directory's static files (and its aligned checkpoints); the set to train on."""
    config, align = start.config, start.config.data.align != "none"
    spec = None  # the permutation groups, checked before the run directory appears
    if align and not resume and accelerator.is_main_process:
        spec = _permutation_spec(start.checkpoints, config)
    if not resume and accelerator.is_main_process:
        runfiles.start_run_dir(run_dir, config, start.layout, start.checkpoints, overwrite=overwrite,
                               conditions=start.conditions, num_processes=accelerator.num_processes,
                               lineage=start.lineage, state_of=start.state_of.tolist(), sizing=start.sizing)
    accelerator.wait_for_everyone()
    if not align:
        return start.checkpoints
    if spec is not None:
        from rpgen.align import align_checkpoints

        align_checkpoints(start.checkpoints, run_dir / runfiles.ALIGNED, spec, progress=progress,
                          lineage=start.lineage.index)  # one permutation per training run
    accelerator.wait_for_everyone()
    return CheckpointSet.open(run_dir / runfiles.ALIGNED, order=config.data.tensor_order)


def _fit(start: _Start, method: Method, checkpoints: CheckpointSet, run_dir: Path, *, accelerator, resume: bool,
         stop_after: int | None, progress: bool) -> tuple[torch.nn.Module, FitLoop | None]:
    """Build the method's model and train its stages; the loop is None when it stopped early."""
    config, conditions = start.config, start.conditions
    tc = config.train
    torch.manual_seed(tc.seed)
    model = method.build(config, start.layout, num_states=int(start.state_of.max()) + 1,
                         cond_dim=None if conditions is None else conditions.shape[1])
    rng = torch.Generator().manual_seed(tc.seed * 1000 + accelerator.process_index)
    data = TrainingSet(checkpoints.checkpoints, start.layout, conditions, config, accelerator.device,
                       accelerator.num_processes, state_of=start.state_of)
    stopper = None
    if tc.evaluator:
        if conditions is not None or not method.distributed:
            raise RpgenError(f"config train.evaluator = {tc.evaluator!r}: evaluating while training applies to "
                             "unconditional rpg and mse runs; evaluate after training with rpgen evaluate")
        if accelerator.is_main_process:
            stopper = stopping.Stopper.start(tc.evaluator, config=config, checkpoints=checkpoints.checkpoints,
                                             run_dir=run_dir)
            stopper.history = stopping.read_history(run_dir / runfiles.METRICS) if resume else []
    loop = FitLoop(accelerator, run_dir, tc, resume=resume, stop_after=stop_after, stopper=stopper,
                   run_of=lambda module: in_training(run_dir, config, start.layout, module, method))
    with progress_bar(enabled=progress and accelerator.is_main_process) as bar, deferred_interrupt() as interrupted:
        if not bar.disable:
            for line in plan_lines(config, start.layout, num_checkpoints=len(checkpoints), lineage=start.lineage,
                                   sizing=start.sizing, memory=start.memory, resume=resume):
                bar.console.print(line, highlight=False, soft_wrap=True)
        for stage in method.stages(model.to(accelerator.device), data, rng=rng):
            if not loop.fit(stage, rng=rng, bar=bar, interrupted=interrupted):
                return model, None
    return model, loop


def _check_align(config: Config) -> None:
    data = config.data
    if bool(data.align_model) == bool(data.align_spec):
        raise RpgenError(f"config data.align = {data.align!r} needs one of data.align_model (--model module:factory) "
                         "or data.align_spec (--align-spec FILE), not " + ("both" if data.align_model else "neither"))


def _permutation_spec(checkpoints: CheckpointSet, config: Config):
    """The permutation groups of the zoo's model: traced from data.align_model, or data.align_spec."""
    import rpgen.align as align
    from rpgen.formats.checkpoints import load_state_dict

    first = checkpoints.paths[0]
    if first.is_dir():
        raise RpgenError(f"{first}: --align reads checkpoint files (state_dicts), not adapter or model folders")
    state_dict = load_state_dict(first)
    if config.data.align_spec:
        return align.load_spec(config.data.align_spec, state_dict)
    model = align.load_model_factory(config.data.align_model)
    align.check_matches(model, state_dict, first)
    return align.spec_from_model(model)
