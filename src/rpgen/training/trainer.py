"""Training, method-agnostic (Hugging Face Accelerate): AdamW, warm-up + cosine, clipping, EMA,
resume, logs.

:func:`train` opens the checkpoints, starts the run directory and runs the stages its method
(:mod:`rpgen.methods`) yields through one fit loop. It runs the same on one CPU, one GPU (bf16
autocast) or several processes under ``accelerate launch`` (DDP, for methods that support it).
Only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import save_file

import rpgen.safety.resources as resources
import rpgen.run_dir as runfiles
from rpgen.formats.checkpoints import open_checkpoints
from rpgen.data.conditions import CONDITIONS_FILE, read_conditions
from rpgen.config import Config
from rpgen.errors import RpgenError
from rpgen.safety.atomic import atomic_path, check_output_dir, write_text_atomic
from rpgen.data.lineage import find_runs
from rpgen.safety.locks import run_lock
from rpgen.methods import Stage, TrainingSet, get_method
from rpgen.safety.overwrite import check_not_overlapping
from rpgen.training.loss_plot import plot_loss
from rpgen.display import progress_bar
from rpgen.training.resolve import resolve_sizing
from rpgen.data.tokens import tokens_fit_in_memory
from rpgen.data.tokenizer import Layout, fit_layout


def resolve_config(config: Config, *, device: torch.device) -> Config:
    """Fill the "auto" settings for this device; the result is what config.toml records."""
    from rpgen.models.backbones import mamba_ssm_available

    model = config.model
    impl = model.mamba_impl
    if impl == "auto":
        impl = "cuda" if device.type == "cuda" and mamba_ssm_available() else "torch"
    elif impl == "cuda" and not (device.type == "cuda" and mamba_ssm_available()):
        raise RpgenError("config model.mamba_impl = 'cuda' needs a CUDA device and the mamba-ssm package "
                         "(pip install 'rpgen[cuda]')")
    d_state = model.d_state or (128 if impl == "cuda" else 16)
    precision = config.train.mixed_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "no"
    config = config.replace("model", mamba_impl=impl, d_state=d_state)
    return config.replace("train", mixed_precision=precision)


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(checkpoint_dir: str | Path, run_dir: str | Path, config: Config | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path:
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
    # Without an accelerator, several processes (torchrun / accelerate launch --multi_gpu) form a
    # gloo group only when Accelerate is told to use the CPU; `accelerate launch --cpu` starts one process.
    state = PartialState(cpu=not torch.cuda.is_available())
    with run_lock(run_dir) if state.is_main_process else nullcontext():  # one training process group per run
        return _train(checkpoint_dir, run_dir, config, state=state, resume=resume, overwrite=overwrite,
                      progress=progress, stop_after=stop_after)


def _resolve_states(config: Config, runs, *, conditional: bool, resume: bool) -> Config:
    """``config`` with ``data.states = "auto"`` made concrete: one state per training run when the
    zoo has several (as the original code keeps one per seed), else one per checkpoint
    (unconditional) or none (conditional: the condition alone)."""
    states = config.data.states
    if states == "auto":
        states = "run" if runs.num_runs > 1 else ("none" if conditional else "checkpoint")
    elif states == "checkpoint" and conditional and not resume:
        raise RpgenError("config data.states = 'checkpoint' does not fit a conditional run (a state per checkpoint "
                         "cannot be chosen for a new condition): use 'run' (a state per training run beside the "
                         "condition) or 'none'")
    return config.replace("data", states=states)


def _train(checkpoint_dir: Path, run_dir: Path, config: Config | None, *, state, resume: bool, overwrite: bool,
           progress: bool, stop_after: int | None) -> Path:
    from accelerate import Accelerator

    if resume:
        saved = saved_config(run_dir)
        config = saved if config is None else _resumed_config(saved, config, run_dir=run_dir)
    else:
        check_output_dir(run_dir, overwrite=overwrite)
    config = (config or Config()).replace("data", checkpoint_dir=str(checkpoint_dir.resolve()))
    if config.data.align != "none":  # the run trains on, and is evaluated against, its aligned copies
        _check_align(config)
        config = config.replace("data", checkpoint_dir=str((run_dir / runfiles.ALIGNED).resolve()))
    method = get_method(config.model.method)
    if not method.distributed and (resume or stop_after is not None):
        raise RpgenError(f"config model.method = {method.name!r} cannot --resume or stop early; train it again")

    checkpoints = open_checkpoints(checkpoint_dir, order=config.data.tensor_order)
    paths = [c.path for c in checkpoints]
    layout = fit_layout(checkpoints, token_size=config.data.token_size)
    conditions = read_conditions(checkpoint_dir, [p.name for p in paths]) if method.takes_conditions else None
    if resume:
        _check_unchanged(run_dir, checkpoint_dir, layout, conditions, [p.name for p in paths])
    runs = find_runs(checkpoint_dir, [p.name for p in paths], checkpoints, layout, estimate=conditions is None)
    config, sizing = resolve_sizing(config, layout, runs, conditions)
    config = _resolve_states(config, runs, conditional=conditions is not None, resume=resume)
    state_of = {"run": torch.tensor(runs.index), "checkpoint": torch.arange(len(paths)),
                "none": torch.zeros(len(paths), dtype=torch.long)}[config.data.states]  # (K,)
    use_cpu = not torch.cuda.is_available()
    if state.num_processes > 1 and not method.distributed:
        raise RpgenError(f"config model.method = {method.name!r} trains in one process only "
                         f"(started with {state.num_processes})")
    config = method.resolve(resolve_config(config, device=state.device))
    if resume and state.is_main_process:
        write_text_atomic(run_dir / runfiles.CONFIG, config.to_toml())  # records the new [train] settings
    in_memory = tokens_fit_in_memory(len(checkpoints), layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
    memory = method.training_memory(config, layout, num_checkpoints=len(paths), num_processes=state.num_processes,
                                    in_memory=in_memory)
    if state.device.type == "cpu" and memory is not None:  # CPU RAM is what an OOM kill takes
        resources.check_resources(
            f"training on {checkpoint_dir} ({layout.num_params:,} parameters, {len(paths)} checkpoints)",
            memory=memory * state.num_processes,
            disk=resources.training_disk(config, layout, num_checkpoints=len(paths)), disk_path=run_dir)
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision, cpu=use_cpu)
    spec = None  # the permutation groups, checked before the run directory appears
    if config.data.align != "none" and not resume and accelerator.is_main_process:
        spec = _permutation_spec(checkpoint_dir, config)
    if not resume and accelerator.is_main_process:
        runfiles.start_run_dir(run_dir, config, layout, checkpoints[0], paths, overwrite=overwrite,
                               conditions=conditions, num_processes=accelerator.num_processes,
                               runs=runs, state_of=state_of.tolist(), sizing=sizing)
    accelerator.wait_for_everyone()
    if config.data.align != "none":
        if spec is not None:
            import rpgen.align as align

            align.align_checkpoints(checkpoint_dir, run_dir / runfiles.ALIGNED, spec, progress=progress,
                                    runs=runs.index)  # one permutation per training run
        accelerator.wait_for_everyone()
        checkpoints = open_checkpoints(run_dir / runfiles.ALIGNED, order=config.data.tensor_order)

    tc = config.train
    torch.manual_seed(tc.seed)
    model = method.build(config, layout, num_states=int(state_of.max()) + 1,
                         cond_dim=None if conditions is None else conditions.shape[1])
    rng = torch.Generator().manual_seed(tc.seed * 1000 + accelerator.process_index)
    data = TrainingSet(checkpoints, layout, conditions, config, accelerator.device, accelerator.num_processes,
                       state_of=state_of)
    loop = _FitLoop(accelerator, run_dir, tc, resume=resume, stop_after=stop_after)
    with progress_bar(enabled=progress and accelerator.is_main_process) as bar, \
            _deferred_interrupt() as interrupted:
        for stage in method.stages(model.to(accelerator.device), data, rng=rng):
            if not loop.fit(stage, rng=rng, bar=bar, interrupted=interrupted):
                return run_dir  # stopped early with a resumable state
    if accelerator.is_main_process:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        weights.update(loop.ema_weights(model))
        with atomic_path(run_dir / method.weights_file) as tmp:
            save_file(weights, str(tmp))
        plot_loss(run_dir / runfiles.METRICS, run_dir / runfiles.LOSS_PLOT)
    accelerator.wait_for_everyone()
    return run_dir


def _check_align(config: Config) -> None:
    data = config.data
    if bool(data.align_model) == bool(data.align_spec):
        raise RpgenError(f"config data.align = {data.align!r} needs one of data.align_model (--model module:factory) "
                         "or data.align_spec (--align-spec FILE), not " + ("both" if data.align_model else "neither"))


def _permutation_spec(checkpoint_dir: Path, config: Config):
    """The permutation groups of the zoo's model: traced from data.align_model, or data.align_spec."""
    import rpgen.align as align
    from rpgen.formats.checkpoints import list_checkpoints, load_state_dict

    first = list_checkpoints(checkpoint_dir)[0]
    if first.is_dir():
        raise RpgenError(f"{first}: --align reads checkpoint files (state_dicts), not adapter or model folders")
    state_dict = load_state_dict(first)
    if config.data.align_spec:
        return align.load_spec(config.data.align_spec, state_dict)
    model = align.load_model_factory(config.data.align_model)
    align.check_matches(model, state_dict, first)
    return align.spec_from_model(model)


class _FitLoop:
    """Runs one :class:`~rpgen.methods.Stage` after another: AdamW with warm-up + cosine,
    clipping, EMA, logging to metrics.jsonl, resumable states and early stops."""

    def __init__(self, accelerator, run_dir: Path, tc, *, resume: bool, stop_after: int | None) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.tc = tc
        self.resume = resume
        self.stop_after = stop_after
        self.start = time.perf_counter()
        self._ema: list[tuple[str, torch.Tensor]] = []  # (name in its stage's module, EMA value)
        self._ema_module: torch.nn.Module | None = None  # the module of the stage that kept an EMA

    def fit(self, stage: Stage, *, rng: torch.Generator, bar, interrupted: Callable[[], bool]) -> bool:
        """Train ``stage``; False when it stopped early (interrupt aside, which raises) with a saved state."""
        accelerator, tc = self.accelerator, self.tc
        main = accelerator.is_main_process
        module = stage.module
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=stage.lr, weight_decay=tc.weight_decay)
        ema = [p.detach().clone() for p in module.parameters()] if stage.ema_decay > 0 else None
        step = 0
        if stage.resumable and self.resume:
            path = runfiles.state_path(self.run_dir)
            if path is None:
                raise RpgenError(f"cannot resume: {self.run_dir} has no saved training state yet; start it again")
            step = runfiles.load_state(path, module, optimizer, ema, rng, process_index=accelerator.process_index)
        if stage.resumable:
            prepared, optimizer = accelerator.prepare(module, optimizer)
        else:
            prepared = module

        def save() -> None:
            if main:
                runfiles.save_state(self.run_dir / runfiles.STATE, accelerator.unwrap_model(prepared), optimizer,
                                    ema, rng, step)
            accelerator.wait_for_everyone()

        last = stage.steps if self.stop_after is None else min(stage.steps, step + self.stop_after)
        task = bar.add_task(stage.title, total=stage.steps, completed=step, loss=float("nan"))
        running, since_log = 0.0, 0
        while step < last:
            if interrupted():
                if stage.resumable:
                    save()
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = stage.lr * lr_factor(step, warmup=tc.warmup_steps, total=stage.steps)
            with accelerator.autocast():
                loss = stage.loss(prepared)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            norm = accelerator.clip_grad_norm_(prepared.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
            value = loss.item()
            _check_finite(stage, step + 1, value, norm, lr=optimizer.param_groups[0]["lr"])
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, module.parameters()):
                        e.lerp_(p.detach(), 1 - stage.ema_decay)
            step += 1
            running += value
            since_log += 1
            if step % tc.log_every == 0 or step == stage.steps:
                bar.update(task, loss=running / since_log)
                if main:
                    self._log(stage, step, running / since_log, optimizer.param_groups[0]["lr"])
                running, since_log = 0.0, 0
            bar.update(task, completed=step)
            if stage.resumable and step % tc.save_every == 0 and step < stage.steps:
                save()
        if stage.resumable:
            save()
        if ema is not None:
            names = {id(p): n for n, p in module.named_parameters()}
            self._ema += [(names[id(p)], e) for p, e in zip(module.parameters(), ema)]
            self._ema_module = module
        return step >= stage.steps

    def ema_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The EMA values of the trained stages, under their names in ``model``'s state_dict."""
        if not self._ema:
            return {}
        prefix = next(name for name, m in model.named_modules() if m is self._ema_module)
        prefix = f"{prefix}." if prefix else ""
        return {prefix + n: e.detach().cpu().contiguous() for n, e in self._ema}

    def _log(self, stage: Stage, step: int, loss: float, lr: float) -> None:
        with (self.run_dir / runfiles.METRICS).open("a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage.name, "step": step, "loss": loss, "lr": lr,
                                "elapsed_s": round(time.perf_counter() - self.start, 3)}) + "\n")


def _check_finite(stage: Stage, step: int, loss: float, norm: torch.Tensor | None, *, lr: float) -> None:
    """Stop at the first non-finite loss or gradient norm: what follows would be garbage."""
    what = None
    if not math.isfinite(loss):
        what = f"loss is {loss}"
    elif norm is not None and not bool(torch.isfinite(norm)):
        what = f"gradient norm is {float(norm)}"
    if what is not None:
        raise RpgenError(f"training diverged at {stage.title} step {step}: {what} (learning rate {lr:.3g}); "
                         "lower train.lr or raise train.warmup_steps")


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag checked between steps; the second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    caught = []

    def handler(signum, frame):
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(caught)
    finally:
        signal.signal(signal.SIGINT, previous)


def saved_config(run_dir: Path) -> Config:
    """The config of a run that can be resumed."""
    config = runfiles.load_config(run_dir) if (Path(run_dir) / runfiles.CONFIG).is_file() else None
    if config is None:
        raise RpgenError(f"cannot resume: {run_dir} is not an rpgen run directory (no {runfiles.CONFIG})")
    if runfiles.state_path(Path(run_dir)) is None:
        raise RpgenError(f"cannot resume: {run_dir} has no saved training state yet; start it again")
    return config


# Settings that ``rpgen train`` fills in when a run starts: a config that leaves them at their
# default does not ask to change them.
_FILLED_ON_START = {("data", "checkpoint_dir"), ("data", "states"), ("model", "mamba_impl"), ("model", "d_state"),
                    ("model", "d_model"), ("sample", "temperature")}


def _resumed_config(saved: Config, config: Config, *, run_dir: Path) -> Config:
    """``saved`` with the [train] section of ``config``; any other change is refused in one line."""
    for section in dataclasses.fields(Config):
        if section.name == "train":
            continue
        old, new = getattr(saved, section.name), getattr(config, section.name)
        for f in dataclasses.fields(old):
            was, asked = getattr(old, f.name), getattr(new, f.name)
            if was == asked or ((section.name, f.name) in _FILLED_ON_START and asked == f.default):
                continue
            raise RpgenError(f"--resume cannot change {section.name}.{f.name} ({was!r} in "
                             f"{run_dir / runfiles.CONFIG}, {asked!r} asked): only [train] settings may change; "
                             "start a new run instead")
    return dataclasses.replace(saved, train=config.train)


def _check_unchanged(run_dir: Path, checkpoint_dir: Path, layout: Layout, conditions: torch.Tensor | None,
                     names: list[str]) -> None:
    """--resume needs the same checkpoints (layout and statistics) and conditions as the run's start."""
    saved = Layout.from_json((run_dir / runfiles.TOKENIZER).read_text(encoding="utf-8"))
    if saved != layout:
        raise RpgenError(f"{checkpoint_dir}: checkpoints changed since {run_dir} was started; "
                         "start a new run instead of --resume")
    saved_conditions = read_conditions(run_dir, names) if (run_dir / runfiles.CONDITIONS).is_file() else None
    if (saved_conditions is None) != (conditions is None) or (
            conditions is not None and not torch.equal(saved_conditions, conditions)):
        raise RpgenError(f"{checkpoint_dir}: {CONDITIONS_FILE} changed since {run_dir} was started; "
                         "start a new run instead of --resume")
