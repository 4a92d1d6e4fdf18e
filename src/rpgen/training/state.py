"""What ``--resume`` needs: the resumable training state in ``RUN_DIR/state/``, and the checks that
the run may continue (its own config, the same checkpoints and conditions).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import rpgen.run_dir as runfiles
from rpgen.config import Config
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.conditions import CONDITIONS_FILE
from rpgen.data.tokenizer import Layout
from rpgen.errors import RpgenError, first_line
from rpgen.training.resolve import FILLED_ON_START


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               ema: list[torch.Tensor] | None, rng: torch.Generator, step: int) -> None:
    """Replace the resumable state ``path`` (a folder) in one rename: a crash leaves the old or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{i}": e.detach().cpu().contiguous() for i, e in enumerate(ema)})
    tensors["rng"] = rng.get_state()
    save_file(tensors, str(tmp / "state.safetensors"), metadata={"step": str(step)})
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def state_path(run_dir: Path) -> Path | None:
    """The run's resumable state: ``state/``, or ``state.old/`` when a crash came between the two
    renames of :func:`save_state`; None when there is neither."""
    for name in (runfiles.STATE, runfiles.STATE + ".old"):
        if (run_dir / name / "state.safetensors").is_file() and (run_dir / name / "optimizer.pt").is_file():
            return run_dir / name
    return None


def load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               ema: list[torch.Tensor] | None, rng: torch.Generator, *, process_index: int) -> int:
    """Restore what :func:`save_state` wrote; returns the step to continue from."""
    file = path / "state.safetensors"
    try:
        with safe_open(str(file), framework="pt") as f:
            step = int(f.metadata()["step"])
        tensors = load_file(str(file))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    except Exception as e:  # a damaged state: any of safetensors', torch's or our own key errors
        raise RpgenError(f"{path}: cannot restore the training state ({first_line(e)}); start the run again") from None
    if ema is not None:
        for i, e in enumerate(ema):
            e.copy_(tensors.get(f"ema.{i}", e))
    if process_index == 0:
        rng.set_state(tensors["rng"])
    else:  # only the main process's RNG is saved; the others continue on a fresh stream
        rng.manual_seed(rng.initial_seed() * 1_000_003 + step)
    return step


def saved_config(run_dir: Path) -> Config:
    """The config of a run that can be resumed."""
    config = runfiles.load_config(run_dir) if (Path(run_dir) / runfiles.CONFIG).is_file() else None
    if config is None:
        raise RpgenError(f"cannot resume: {run_dir} is not an rpgen run directory (no {runfiles.CONFIG})")
    if state_path(Path(run_dir)) is None:
        raise RpgenError(f"cannot resume: {run_dir} has no saved training state yet; start it again")
    return config


def resumed_config(saved: Config, config: Config, *, run_dir: Path) -> Config:
    """``saved`` with the [train] section of ``config``; any other change is refused in one line."""
    for section in dataclasses.fields(Config):
        if section.name == "train":
            continue
        old, new = getattr(saved, section.name), getattr(config, section.name)
        for f in dataclasses.fields(old):
            was, asked = getattr(old, f.name), getattr(new, f.name)
            if was == asked or ((section.name, f.name) in FILLED_ON_START and asked == f.default):
                continue
            raise RpgenError(f"--resume cannot change {section.name}.{f.name} ({was!r} in "
                             f"{run_dir / runfiles.CONFIG}, {asked!r} asked): only [train] settings may change; "
                             "start a new run instead")
    return dataclasses.replace(saved, train=config.train)


def check_unchanged(run_dir: Path, checkpoints: CheckpointSet, layout: Layout, conditions: torch.Tensor | None
                    ) -> None:
    """--resume needs the same checkpoints (layout and statistics) and conditions as the run's start."""
    checkpoint_dir = checkpoints.folder
    saved = Layout.from_json((run_dir / runfiles.TOKENIZER).read_text(encoding="utf-8"))
    if saved != layout:
        raise RpgenError(f"{checkpoint_dir}: checkpoints changed since {run_dir} was started; "
                         "start a new run instead of --resume")
    saved_conditions = runfiles.RunDir(run_dir).conditions(checkpoints.names)
    if (saved_conditions is None) != (conditions is None) or (
            conditions is not None and not torch.equal(saved_conditions, conditions)):
        raise RpgenError(f"{checkpoint_dir}: {CONDITIONS_FILE} changed since {run_dir} was started; "
                         "start a new run instead of --resume")
