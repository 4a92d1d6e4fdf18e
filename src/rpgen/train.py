"""Training loop (Hugging Face Accelerate): AdamW, warm-up + cosine, clipping, EMA, resume.

Runs the same on one CPU, one GPU (bf16 autocast) or several processes under
``accelerate launch`` (DDP). Only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file, save_file

from rpgen import resources
from rpgen import run as runfiles
from rpgen.adapters import copy_adapter_config
from rpgen.checkpoints import LazyCheckpoint, open_checkpoints
from rpgen.conditions import CONDITIONS_FILE, is_binary, read_conditions, write_conditions
from rpgen.config import Config, load_toml
from rpgen.diffusion import denoising_loss, draw_rows
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir, atomic_path, check_output_dir
from rpgen.plots import plot_loss
from rpgen.progress import progress_bar
from rpgen.regression import regression_loss
from rpgen.tokendata import token_source
from rpgen.tokenizer import Layout, copied_tensors, fit_layout


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
    """Train a generator on the checkpoints in ``checkpoint_dir``; write ``run_dir``.

    With ``resume``, continue ``run_dir`` from its last saved state with the run's own
    config.toml; only the ``[train]`` section of ``config`` (e.g. more steps) is taken.
    Ctrl-C finishes the current step, saves a resumable state and raises KeyboardInterrupt
    (a second Ctrl-C stops at once). ``stop_after`` ends this call after that many steps with
    a resumable state, as if interrupted (time-boxed training); the run is then unfinished.

    Checkpoints are opened lazily and read in one streaming pass for the statistics; a step then
    reads only the tokens it denoises (all tokens are held in RAM when they fit in
    ``data.tokens_in_memory_mb``; both give the same run). Under ``accelerate launch`` with P
    processes, each process takes ``batch_size / P`` checkpoints and ``diffusion_batch / P``
    tokens per step, so the effective batch and the learning dynamics match one process.

    If ``checkpoint_dir`` holds a ``conditions.json`` (checkpoint file -> vector, see
    :mod:`rpgen.conditions`), the generator is conditional: it learns to produce a checkpoint
    from its condition vector instead of its permutation state.
    """
    from accelerate import Accelerator, PartialState

    run_dir = Path(run_dir)
    checkpoint_dir = Path(checkpoint_dir)
    if not resume:
        check_output_dir(run_dir, overwrite=overwrite)
    else:
        saved = saved_config(run_dir)
        config = saved if config is None else dataclasses.replace(saved, train=config.train)
    config = (config or Config()).replace("data", checkpoint_dir=str(checkpoint_dir.resolve()))
    if config.model.method == "pdiff":
        from rpgen.pdiff import train_pdiff

        if resume or stop_after is not None:
            raise RpgenError("config model.method = 'pdiff' cannot --resume or stop early; train it again")
        return train_pdiff(checkpoint_dir, run_dir, config, overwrite=overwrite, progress=progress)

    checkpoints = open_checkpoints(checkpoint_dir)
    paths = [c.path for c in checkpoints]
    layout = fit_layout(checkpoints, token_size=config.data.token_size)
    conditions = read_conditions(checkpoint_dir, [p.name for p in paths])  # (K, C) or None
    if resume:
        saved = Layout.from_json((run_dir / runfiles.TOKENIZER).read_text(encoding="utf-8"))
        if saved != layout:
            raise RpgenError(f"{checkpoint_dir}: checkpoints changed since {run_dir} was started; "
                             "start a new run instead of --resume")
        saved_conditions = read_conditions(run_dir, [p.name for p in paths]) if (
            run_dir / runfiles.CONDITIONS).is_file() else None
        if (saved_conditions is None) != (conditions is None) or (
                conditions is not None and not torch.equal(saved_conditions, conditions)):
            raise RpgenError(f"{checkpoint_dir}: {CONDITIONS_FILE} changed since {run_dir} was started; "
                             "start a new run instead of --resume")
    # Without an accelerator, several processes (torchrun / accelerate launch --multi_gpu) form a
    # gloo group only when Accelerate is told to use the CPU; `accelerate launch --cpu` starts one process.
    use_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=use_cpu)
    config = resolve_config(config, device=state.device)
    tokens_bytes = len(checkpoints) * layout.num_tokens * layout.token_size * 4
    if state.device.type == "cpu":  # GPU memory is not checked here; CPU RAM is what an OOM kill takes
        resources.check_resources(
            f"training on {checkpoint_dir} ({layout.num_params:,} parameters, {len(paths)} checkpoints)",
            memory=resources.training_memory(
                config, layout, num_checkpoints=len(paths), num_processes=state.num_processes,
                in_memory=tokens_bytes <= config.data.tokens_in_memory_mb * 2**20) * state.num_processes,
            disk=resources.training_disk(config, layout, num_checkpoints=len(paths)), disk_path=run_dir)
    data = token_source(checkpoints, layout, in_memory_limit_mb=config.data.tokens_in_memory_mb)
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision, cpu=use_cpu)
    main = accelerator.is_main_process

    if not resume and main:
        _start_run_dir(run_dir, config, layout, checkpoints[0], paths, overwrite=overwrite,
                       conditions=conditions, num_processes=accelerator.num_processes)
    accelerator.wait_for_everyone()

    tc = config.train
    torch.manual_seed(tc.seed)
    generator = runfiles.build_generator(config, layout, num_states=len(paths),
                                         cond_dim=None if conditions is None else conditions.shape[1])
    optimizer = torch.optim.AdamW(generator.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = [p.detach().clone() for p in generator.parameters()] if tc.ema_decay > 0 else None
    rng = torch.Generator().manual_seed(tc.seed * 1000 + accelerator.process_index)
    step = 0
    if resume:
        step = _load_state(run_dir / runfiles.STATE, generator, optimizer, ema, rng,
                           process_index=accelerator.process_index)
    model, optimizer = accelerator.prepare(generator, optimizer)
    if conditions is not None:
        conditions = conditions.to(accelerator.device)
    num_states = len(paths)
    procs = accelerator.num_processes
    batch = math.ceil(min(tc.batch_size, num_states) / procs)  # per process
    diffusion_batch = math.ceil(tc.diffusion_batch / procs)

    def save_state() -> None:
        if main:
            _save_state(run_dir / runfiles.STATE, accelerator.unwrap_model(model), optimizer, ema, rng, step)
        accelerator.wait_for_everyone()

    start = time.perf_counter()
    log_path = run_dir / runfiles.METRICS
    running = 0.0
    last_step = tc.steps if stop_after is None else min(tc.steps, step + stop_after)
    with progress_bar(enabled=progress and main) as bar, _deferred_interrupt() as interrupted:
        task = bar.add_task("training", total=tc.steps, completed=step, loss=float("nan"))
        while step < last_step:
            if interrupted():
                save_state()
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * lr_factor(step, warmup=tc.warmup_steps, total=tc.steps)
            states = torch.randint(0, num_states, (batch,), generator=rng)  # (B,)
            if config.model.method == "mse":  # the regression ablation fits every token of the batch
                rows = torch.arange(batch * layout.num_tokens)  # (B * L,)
            else:
                rows = draw_rows(batch * layout.num_tokens, diffusion_batch, rng=rng)  # (N,)
            x0 = data.gather(states, rows).to(accelerator.device)  # (N, S)
            states = states.to(accelerator.device)
            selectors = states if conditions is None else conditions[states]  # (B,) or (B, C)
            with accelerator.autocast():
                if config.model.method == "mse":
                    loss = regression_loss(model, x0.reshape(batch, layout.num_tokens, -1), selectors)
                else:
                    loss = denoising_loss(model, x0, rows.to(accelerator.device), selectors, config.diffusion,
                                          rng=rng)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if tc.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, accelerator.unwrap_model(model).parameters()):
                        e.lerp_(p.detach(), 1 - tc.ema_decay)
            step += 1
            running += loss.item()
            if step % tc.log_every == 0 or step == tc.steps:
                count = tc.log_every if step % tc.log_every == 0 else step % tc.log_every
                mean_loss = running / count
                running = 0.0
                bar.update(task, loss=mean_loss)
                if main:
                    with log_path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": step, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                                            "elapsed_s": round(time.perf_counter() - start, 3)}) + "\n")
            bar.update(task, completed=step)
            if step % tc.save_every == 0 and step < tc.steps:
                save_state()
    save_state()
    if step < tc.steps:
        return run_dir
    if main:
        final = accelerator.unwrap_model(model)
        weights = {k: v.detach().cpu().contiguous() for k, v in final.state_dict().items()}
        if ema is not None:
            names = [n for n, _ in final.named_parameters()]
            weights.update({n: e.detach().cpu().contiguous() for n, e in zip(names, ema)})
        with atomic_path(run_dir / runfiles.GENERATOR) as tmp:
            save_file(weights, str(tmp))
        plot_loss(log_path, run_dir / runfiles.LOSS_PLOT)
    accelerator.wait_for_everyone()
    return run_dir


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
    if not (run_dir / runfiles.CONFIG).is_file():
        raise RpgenError(f"cannot resume: {run_dir} is not an rpgen run directory (no {runfiles.CONFIG})")
    if not (run_dir / runfiles.STATE).is_dir():
        raise RpgenError(f"cannot resume: {run_dir} has no saved training state yet; start it again")
    return load_toml(run_dir / runfiles.CONFIG)


def _start_run_dir(run_dir: Path, config: Config, layout: Layout, reference: LazyCheckpoint, paths: list[Path], *,
                   overwrite: bool, conditions: torch.Tensor | None = None, num_processes: int = 1) -> None:
    """Write the run's static files, all at once (the directory appears complete or not at all)."""
    info = {
        "num_checkpoints": len(paths),
        "checkpoint_files": [p.name for p in paths],
        "num_tokens": layout.num_tokens,
        "generated_params": layout.num_params,
        "num_processes": num_processes,
        "rpgen_format": 1,
    }
    if conditions is not None:
        info.update(condition_dim=conditions.shape[1], binary_conditions=is_binary(conditions))
    with atomic_dir(run_dir, overwrite=overwrite) as tmp:
        (tmp / runfiles.CONFIG).write_text(config.to_toml(), encoding="utf-8")
        (tmp / runfiles.TOKENIZER).write_text(layout.to_json(), encoding="utf-8")
        save_file(copied_tensors(reference, layout), str(tmp / runfiles.COPIED))
        (tmp / runfiles.RUN_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
        if paths[0].is_dir():  # peft adapter folders: generated models reuse their config
            copy_adapter_config(paths[0], tmp)
        if conditions is not None:
            write_conditions(tmp / runfiles.CONDITIONS, {p.name: c.tolist() for p, c in zip(paths, conditions)})


def _save_state(path: Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                ema: list[torch.Tensor] | None, rng: torch.Generator, step: int) -> None:
    """Replace the resumable state in one rename (a crash mid-save leaves the previous one)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{i}": e.detach().cpu().contiguous() for i, e in enumerate(ema)})
    tensors["rng"] = rng.get_state()
    save_file(tensors, str(tmp / "state.safetensors"), metadata={"step": str(step)})
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(path: Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                ema: list[torch.Tensor] | None, rng: torch.Generator, *, process_index: int) -> int:
    from safetensors import safe_open

    file = path / "state.safetensors"
    with safe_open(str(file), framework="pt") as f:
        step = int(f.metadata()["step"])
    tensors = load_file(str(file))
    generator.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        for i, e in enumerate(ema):
            e.copy_(tensors.get(f"ema.{i}", e))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if process_index == 0:
        rng.set_state(tensors["rng"])
    else:  # only the main process's RNG is saved; the others continue on a fresh stream
        rng.manual_seed(rng.initial_seed() * 1_000_003 + step)
    return step
