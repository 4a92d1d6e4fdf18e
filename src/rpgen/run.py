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
                         generated adapter (rpgen.adapters)
  pdiff.safetensors      instead of generator.safetensors when model.method = "pdiff" (rpgen.pdiff)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rpgen.checkpoints import check_finite
from rpgen.config import Config, load_toml
from rpgen.errors import RpgenError
from rpgen.files import read_json_object
from rpgen.models.backbones import mamba_ssm_available
from rpgen.models.generator import Generator
from rpgen.safetensors_io import read_tensors
from rpgen.tokenizer import Layout

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
COPIED = "copied.safetensors"
METRICS = "metrics.jsonl"
STATE = "state"
GENERATOR = "generator.safetensors"
LOSS_PLOT = "loss.png"
RUN_INFO = "run.json"
CONDITIONS = "conditions.json"


def build_generator(config: Config, layout: Layout, *, num_states: int, cond_dim: int | None = None) -> Generator:
    return Generator(config.model, positions=layout.positions(), num_states=num_states,
                     token_size=layout.token_size, cond_dim=cond_dim)


@dataclass
class Run:
    """A finished run, loaded for sampling."""

    path: Path
    config: Config
    layout: Layout
    copied: dict[str, torch.Tensor]
    generator: Generator
    info: dict

    @property
    def condition_dim(self) -> int | None:
        """Length of the condition vectors of a conditional run; None for an unconditional one."""
        dim = self.info.get("condition_dim")
        return None if dim is None else int(dim)

    @property
    def binary_conditions(self) -> bool:
        """True when the run was trained on 0/1 conditions only."""
        return bool(self.info.get("binary_conditions", False))


def run_method(run_dir: str | Path) -> str:
    """``model.method`` of a run directory ("rpg" when it has no config.toml yet)."""
    path = Path(run_dir) / CONFIG
    return load_toml(path).model.method if path.is_file() else "rpg"


def load_run(run_dir: str | Path, *, device: torch.device | str = "cpu") -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RpgenError(f"{run_dir} is not an rpgen run directory (no {CONFIG})")
    if run_method(run_dir) == "pdiff":
        raise RpgenError(f"{run_dir} is a p-diff run (model.method = 'pdiff'): load it with rpgen.pdiff.load_pdiff")
    if not (run_dir / GENERATOR).is_file():
        raise RpgenError(f"{run_dir}: training has not finished (no {GENERATOR}); "
                         f"continue it with `rpgen train ... --out {run_dir} --resume`")
    for name in (TOKENIZER, RUN_INFO, COPIED):
        if not (run_dir / name).is_file():
            raise RpgenError(f"{run_dir} is an incomplete run directory (no {name})")
    # Every file is checked as it is read: one line naming the file, never a traceback or NaN models.
    config = load_toml(run_dir / CONFIG)
    try:
        layout = Layout.from_json((run_dir / TOKENIZER).read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, RpgenError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise RpgenError(f"{run_dir / TOKENIZER}: not a valid tokenizer file ({str(e).splitlines()[0]})") from None
    info = read_json_object(run_dir / RUN_INFO)
    num_states, cond_dim = info.get("num_checkpoints"), info.get("condition_dim")
    if not (isinstance(num_states, int) and num_states >= 1) or not (cond_dim is None or isinstance(cond_dim, int)):
        raise RpgenError(f"{run_dir / RUN_INFO}: num_checkpoints must be a positive integer and condition_dim "
                         f"an integer or absent, got {num_states!r} and {cond_dim!r}")
    if config.model.mamba_impl == "cuda" and not (torch.device(device).type == "cuda" and mamba_ssm_available()):
        config = config.replace("model", mamba_impl="torch")  # same parameter names
    generator = build_generator(config, layout, num_states=num_states, cond_dim=cond_dim)
    weights = read_tensors(run_dir / GENERATOR)
    check_finite(weights, name=run_dir / GENERATOR)
    try:
        generator.load_state_dict(weights)
    except RuntimeError as e:
        raise RpgenError(f"{run_dir / GENERATOR}: cannot load generator ({str(e).splitlines()[0]})") from None
    copied = read_tensors(run_dir / COPIED)
    want = {t.name: (t.shape, t.dtype) for t in layout.tensors if not t.generated}
    have = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in copied.items()}
    for name in sorted(want.keys() | have.keys()):
        if have.get(name) != want.get(name):
            raise RpgenError(f"{run_dir / COPIED}: tensor {name!r} is {have.get(name) or 'missing'}; "
                             f"{TOKENIZER} expects {want.get(name) or 'no such tensor'}")
    return Run(run_dir, config, layout, copied, generator.to(device).eval(), info)
