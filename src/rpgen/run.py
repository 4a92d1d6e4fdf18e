"""The run directory: what ``rpgen train`` writes and ``generate`` / ``evaluate`` read.

RUN_DIR/
  config.toml            every setting, resolved
  tokenizer.json         token layout and normalisation statistics (float64, as JSON)
  copied.safetensors     tensors that are copied, not generated (e.g. num_batches_tracked)
  metrics.jsonl          one JSON line per logged training step
  state/                 the latest resumable training state (weights, EMA, optimiser, RNG)
  generator.safetensors  the trained generator; present only when training finished
  loss.png               training loss and learning rate against step
  run.json               checkpoint files, token and parameter counts; for a conditional run also
                         ``condition_dim`` and ``binary_conditions``
  conditions.json        conditional runs only: the training conditions (checkpoint file -> vector)
  adapter_config.json    runs trained on peft adapter folders: their config, written beside each
                         generated adapter (rpgen.outputs)
  config.json            runs trained on transformers model folders: the first folder's config.json,
                         generation_config.json (if any) and model.safetensors.index.json (if sharded),
                         written into each generated model folder (rpgen.outputs)
  pdiff.safetensors      instead of generator.safetensors when model.method = "pdiff"
  .lock                  while a process trains the run: its PID and host
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rpgen.checkpoints import LazyCheckpoint
from rpgen.conditions import is_binary, write_conditions
from rpgen.config import Config, load_toml
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir
from rpgen.methods import Method, get_method
from rpgen.models.backbones import mamba_ssm_available
from rpgen.outputs import keep_form
from rpgen.tokenizer import Layout, copied_tensors

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
COPIED = "copied.safetensors"
METRICS = "metrics.jsonl"
STATE = "state"
GENERATOR = "generator.safetensors"
LOSS_PLOT = "loss.png"
RUN_INFO = "run.json"
CONDITIONS = "conditions.json"
FORMAT = 1


@dataclass
class Run:
    """A finished run, loaded for sampling: its config, layout, copied tensors and trained model."""

    path: Path
    config: Config
    layout: Layout
    copied: dict[str, torch.Tensor]
    model: torch.nn.Module
    info: dict
    method: Method

    @property
    def num_states(self) -> int:
        """Permutation states the model knows (one per training checkpoint)."""
        return int(self.info["num_checkpoints"])

    @property
    def condition_dim(self) -> int | None:
        """Length of the condition vectors of a conditional run; None for an unconditional one."""
        dim = self.info.get("condition_dim")
        return None if dim is None else int(dim)

    @property
    def binary_conditions(self) -> bool:
        """True when the run was trained on 0/1 conditions only."""
        return bool(self.info.get("binary_conditions", False))


def start_run_dir(run_dir: Path, config: Config, layout: Layout, reference: LazyCheckpoint, paths: Sequence[Path], *,
                  overwrite: bool, conditions: torch.Tensor | None = None, num_processes: int = 1) -> None:
    """Write a new run's static files, all at once (the directory appears complete or not at all)."""
    info = {
        "num_checkpoints": len(paths),
        "checkpoint_files": [p.name for p in paths],
        "num_tokens": layout.num_tokens,
        "generated_params": layout.num_params,
        "num_processes": num_processes,
        "rpgen_format": FORMAT,
    }
    if conditions is not None:
        info.update(condition_dim=conditions.shape[1], binary_conditions=is_binary(conditions))
    with atomic_dir(run_dir, overwrite=overwrite) as tmp:
        (tmp / CONFIG).write_text(config.to_toml(), encoding="utf-8")
        (tmp / TOKENIZER).write_text(layout.to_json(), encoding="utf-8")
        save_file(copied_tensors(reference, layout), str(tmp / COPIED))
        (tmp / RUN_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
        keep_form(paths[0], tmp)  # generated models take the checkpoints' form
        if conditions is not None:
            write_conditions(tmp / CONDITIONS, {p.name: c.tolist() for p, c in zip(paths, conditions)})


def load_config(run_dir: str | Path) -> Config:
    """The config.toml of a run directory (one-line error when there is none)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RpgenError(f"{run_dir} is not an rpgen run directory (no {CONFIG})")
    return load_toml(path)


def load_run(run_dir: str | Path, *, device: torch.device | str = "cpu") -> Run:
    """A finished run of any method, its model on ``device`` in eval mode."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    method = get_method(config.model.method)
    weights = run_dir / method.weights_file
    if not weights.is_file():
        hint = (f"continue it with `rpgen train ... --out {run_dir} --resume`" if method.distributed
                else "train it again")
        raise RpgenError(f"{run_dir}: training has not finished (no {method.weights_file}); {hint}")
    for name in (TOKENIZER, RUN_INFO):
        if not (run_dir / name).is_file():
            raise RpgenError(f"{run_dir} is an incomplete run directory (no {name})")
    layout = Layout.from_json((run_dir / TOKENIZER).read_text(encoding="utf-8"))
    info = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))
    if config.model.mamba_impl == "cuda" and not (torch.device(device).type == "cuda" and mamba_ssm_available()):
        config = config.replace("model", mamba_impl="torch")  # same parameter names
    cond_dim = info.get("condition_dim")
    model = method.build(config, layout, num_states=int(info["num_checkpoints"]),
                         cond_dim=None if cond_dim is None else int(cond_dim))
    try:
        model.load_state_dict(load_file(weights))
    except (RuntimeError, OSError) as e:
        raise RpgenError(f"{weights}: cannot load the trained model ({str(e).splitlines()[0]})") from None
    copied = load_file(run_dir / COPIED) if (run_dir / COPIED).is_file() else {}
    return Run(run_dir, config, layout, copied, model.to(device).eval(), info, method)


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
    for name in (STATE, STATE + ".old"):
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
        raise RpgenError(f"{path}: cannot restore the training state ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); start the run again") from None
    if ema is not None:
        for i, e in enumerate(ema):
            e.copy_(tensors.get(f"ema.{i}", e))
    if process_index == 0:
        rng.set_state(tensors["rng"])
    else:  # only the main process's RNG is saved; the others continue on a fresh stream
        rng.manual_seed(rng.initial_seed() * 1_000_003 + step)
    return step
