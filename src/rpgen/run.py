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

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from rpgen.config import Config, load_toml
from rpgen.errors import RpgenError
from rpgen.models.backbones import mamba_ssm_available
from rpgen.models.generator import Generator
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
    for name in (TOKENIZER, RUN_INFO):
        if not (run_dir / name).is_file():
            raise RpgenError(f"{run_dir} is an incomplete run directory (no {name})")
    config = load_toml(run_dir / CONFIG)
    layout = Layout.from_json((run_dir / TOKENIZER).read_text(encoding="utf-8"))
    info = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))
    if config.model.mamba_impl == "cuda" and not (torch.device(device).type == "cuda" and mamba_ssm_available()):
        config = config.replace("model", mamba_impl="torch")  # same parameter names
    cond_dim = info.get("condition_dim")
    generator = build_generator(config, layout, num_states=int(info["num_checkpoints"]),
                                cond_dim=None if cond_dim is None else int(cond_dim))
    try:
        generator.load_state_dict(load_file(run_dir / GENERATOR))
    except (RuntimeError, OSError) as e:
        raise RpgenError(f"{run_dir / GENERATOR}: cannot load generator ({str(e).splitlines()[0]})") from None
    copied = load_file(run_dir / COPIED) if (run_dir / COPIED).is_file() else {}
    return Run(run_dir, config, layout, copied, generator.to(device).eval(), info)
