"""The run directory: what ``rpgen train`` writes and ``generate`` / ``evaluate`` read.

The one file format rpgen defines itself (the checkpoint folders it reads are
:mod:`rpgen.formats`). :func:`start_run_dir` writes a new run's static files at once;
:class:`RunDir` reads each file back, checked as it is read (one line naming the file, never a
traceback). In code, "run" names a run directory; a zoo's training runs are its lineage
(:mod:`rpgen.data.lineage`).

RUN_DIR/
  config.toml            every setting, resolved
  tokenizer.json         token layout and normalisation statistics (float64, as JSON)
  copied.safetensors     tensors that are copied, not generated (e.g. num_batches_tracked)
  centers.safetensors    with data.center element or base: the per-element centre of every generated
                         tensor (what tokens are measured from; rpgen.data.tokenizer)
  metrics.jsonl          one JSON line per logged training step (and per evaluation while training)
  state/                 the latest resumable training state (weights, EMA, optimiser, RNG)
  generator.safetensors  the trained generator; present only when training finished
  loss.png               training loss and learning rate against step
  run.json               checkpoint files, token and parameter counts, the sizing, why training
                         stopped; for a conditional run also ``condition_dim`` and ``binary_conditions``
  conditions.json        conditional runs only: the training conditions (checkpoint file -> vector)
  adapter_config.json    runs trained on peft adapter folders: their config, written beside each
                         generated adapter (rpgen.formats.output_forms)
  config.json            runs trained on transformers model folders: the first folder's config.json,
                         generation_config.json (if any) and model.safetensors.index.json (if sharded),
                         written into each generated model folder (rpgen.formats.output_forms)
  pdiff.safetensors      instead of generator.safetensors when model.method = "pdiff"
  aligned/               with data.align: the checkpoints permuted to match the first one (same
                         functions, rpgen.align) and align.json; the run trains on and is evaluated
                         against these

While a process trains a run, ``.NAME.lock`` beside the run directory holds its PID and host
(:func:`rpgen.safety.locks.run_lock`): a second training of the same run is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rpgen.config import Config, load_toml
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.conditions import is_binary, read_conditions, write_conditions
from rpgen.data.lineage import Lineage
from rpgen.data.tokenizer import Layout, copied_tensors
from rpgen.errors import RpgenError, first_line
from rpgen.formats.dtypes import dtype_name
from rpgen.formats.json_files import read_json_object
from rpgen.formats.safetensors_io import read_tensors
from rpgen.safety.atomic import atomic_dir, write_text_atomic

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
COPIED = "copied.safetensors"
CENTERS = "centers.safetensors"
METRICS = "metrics.jsonl"
STATE = "state"
GENERATOR = "generator.safetensors"
LOSS_PLOT = "loss.png"
RUN_INFO = "run.json"
CONDITIONS = "conditions.json"
ALIGNED = "aligned"
WRITTEN_LATER = (METRICS, STATE, GENERATOR, "pdiff.safetensors", "best.safetensors", LOSS_PLOT, ALIGNED)
"""What training adds to a run directory after it starts (its provenance, rpgen.safety.overwrite)."""
FORMAT = 1


class RunDir:
    """A run directory's files, each read (and checked) when asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def config(self) -> Config:
        """``config.toml`` (one-line error when there is none)."""
        return load_config(self.path)

    def require(self, *names: str) -> None:
        """Refuse an incomplete run directory: one line naming the first missing file."""
        for name in names:
            if not (self.path / name).is_file():
                raise RpgenError(f"{self.path} is an incomplete run directory (no {name})")

    def layout(self) -> Layout:
        """``tokenizer.json``: the token layout and the checkpoint set's statistics."""
        path = self.path / TOKENIZER
        try:
            layout = Layout.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError, RpgenError) as e:  # JSONDecodeError and UnicodeDecodeError included
            raise RpgenError(f"{path}: not a valid tokenizer file ({first_line(e, typed=False)})") from None
        if layout.center == "tensor":
            return layout
        self.require(CENTERS)
        try:
            return layout.with_centers(read_tensors(self.path / CENTERS))
        except RpgenError as e:
            raise RpgenError(f"{self.path / CENTERS}: {e}") from None

    def info(self) -> dict[str, Any]:
        """``run.json``, with ``num_states`` (or ``num_checkpoints``) and ``condition_dim`` checked."""
        info = read_json_object(self.path / RUN_INFO)
        num_states, cond_dim = info.get("num_states", info.get("num_checkpoints")), info.get("condition_dim")
        if not (isinstance(num_states, int) and num_states >= 1) or not (cond_dim is None or isinstance(cond_dim, int)):
            raise RpgenError(f"{self.path / RUN_INFO}: num_states (or num_checkpoints) must be a positive integer and "
                             f"condition_dim an integer or absent, got {num_states!r} and {cond_dim!r}")
        return info

    def copied(self, layout: Layout) -> dict[str, torch.Tensor]:
        """``copied.safetensors``, checked against the tensors ``layout`` copies."""
        copied = read_tensors(self.path / COPIED)
        want = {t.name: (t.shape, t.dtype) for t in layout.tensors if not t.generated}
        have = {k: (tuple(v.shape), dtype_name(v.dtype)) for k, v in copied.items()}
        for name in sorted(want.keys() | have.keys()):
            if have.get(name) != want.get(name):
                raise RpgenError(f"{self.path / COPIED}: tensor {name!r} is {have.get(name) or 'missing'}; "
                                 f"{TOKENIZER} expects {want.get(name) or 'no such tensor'}")
        return copied

    def conditions(self, names: Sequence[str]) -> torch.Tensor | None:
        """The training conditions the run recorded (``conditions.json``), for checkpoints ``names``."""
        return read_conditions(self.path, names) if (self.path / CONDITIONS).is_file() else None

    def checkpoint_folder(self) -> Path:
        """The folder of the checkpoints the run trained on (``data.checkpoint_dir``: the zoo, or its
        aligned copies); a relative path is taken from the working directory, else from the run."""
        path = self.path / CONFIG
        if not path.is_file():
            raise RpgenError(f"{self.path} is not an rpgen run directory (no {CONFIG})")
        folder = load_toml(path).data.checkpoint_dir
        if not folder:
            raise RpgenError(f"{path}: missing key data.checkpoint_dir")
        folder = Path(folder)
        if folder.is_absolute() or folder.exists() or not (self.path / folder).exists():
            return folder
        return self.path / folder

    def elapsed_s(self) -> float:
        """Seconds of training logged so far (the last ``elapsed_s`` of ``metrics.jsonl``; 0 when none):
        a resumed run goes on counting from there."""
        path = self.path / METRICS
        if path.is_symlink() or not path.is_file():
            return 0.0
        for line in reversed(path.read_text(encoding="utf-8").splitlines()):
            try:
                value = json.loads(line).get("elapsed_s")
            except (ValueError, AttributeError):
                continue
            if isinstance(value, (int, float)) and value >= 0:
                return float(value)
        return 0.0

    def record_stop(self, record: dict) -> None:
        """Add why training ended (``stopped``) to ``run.json``."""
        info = read_json_object(self.path / RUN_INFO)
        info["stopped"] = record
        write_text_atomic(self.path / RUN_INFO, json.dumps(info, indent=1))

    def training_checkpoints(self) -> CheckpointSet:
        """The checkpoint set the run trained on, opened (listed once)."""
        return CheckpointSet.open(self.checkpoint_folder())


def start_run_dir(run_dir: Path, config: Config, layout: Layout, checkpoints: CheckpointSet, *, overwrite: bool,
                  conditions: torch.Tensor | None = None, num_processes: int = 1, lineage: Lineage | None = None,
                  state_of: Sequence[int] | None = None, sizing: dict | None = None) -> None:
    """Write a new run's static files, all at once (the directory appears complete or not at all)."""
    paths = checkpoints.paths
    state_of = list(range(len(paths))) if state_of is None else list(state_of)
    info = {
        "num_checkpoints": len(paths),
        "num_states": max(state_of) + 1,
        "checkpoint_files": [p.name for p in paths],
        "state_of_checkpoint": state_of,
        "run_of_checkpoint": list(lineage.index) if lineage is not None else None,
        "sizing": sizing,
        "num_tokens": layout.num_tokens,
        "generated_params": layout.num_params,
        "num_processes": num_processes,
        "rpgen_format": FORMAT,
    }
    if conditions is not None:
        info.update(condition_dim=conditions.shape[1], binary_conditions=is_binary(conditions))
    with atomic_dir(run_dir, overwrite=overwrite, later=WRITTEN_LATER) as tmp:
        (tmp / CONFIG).write_text(config.to_toml(), encoding="utf-8")
        (tmp / TOKENIZER).write_text(layout.to_json(), encoding="utf-8")
        if layout.centers is not None:
            save_file({k: v.contiguous() for k, v in layout.centers.items()}, str(tmp / CENTERS))
        save_file(copied_tensors(checkpoints.checkpoints[0], layout), str(tmp / COPIED))
        (tmp / RUN_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
        checkpoints.keep_form(tmp)  # generated models take the checkpoints' form
        if conditions is not None:
            write_conditions(tmp / CONDITIONS, {p.name: c.tolist() for p, c in zip(paths, conditions)})


def load_config(run_dir: str | Path) -> Config:
    """The config.toml of a run directory (one-line error when there is none)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RpgenError(f"{run_dir} is not an rpgen run directory (no {CONFIG})")
    return load_toml(path)
