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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rpgen.formats.checkpoints import LazyCheckpoint, check_finite
from rpgen.data.conditions import check_conditions, is_binary, write_conditions
from rpgen.config import Config, Sampler, load_toml
from rpgen.methods.diffusion import check_sampling, make_scheduler
from rpgen.errors import RpgenError, first_line
from rpgen.formats.json_files import read_json_object
from rpgen.safety.atomic import atomic_dir
from rpgen.formats.output_forms import keep_form
from rpgen.data.lineage import Runs
from rpgen.methods import Method, get_method
from rpgen.methods.base import Selector, states_beside_condition
from rpgen.models.backbones import mamba_ssm_available
from rpgen.formats.safetensors_io import read_tensors
from rpgen.training.resolve import auto_temperature
from rpgen.data.tokenizer import Layout, copied_tensors

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
COPIED = "copied.safetensors"
METRICS = "metrics.jsonl"
STATE = "state"
GENERATOR = "generator.safetensors"
LOSS_PLOT = "loss.png"
RUN_INFO = "run.json"
CONDITIONS = "conditions.json"
ALIGNED = "aligned"
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
        """Permutation states the model knows (one per training checkpoint, or per training run)."""
        return int(self.info.get("num_states", self.info["num_checkpoints"]))

    @property
    def condition_dim(self) -> int | None:
        """Length of the condition vectors of a conditional run; None for an unconditional one."""
        dim = self.info.get("condition_dim")
        return None if dim is None else int(dim)

    @property
    def states_beside_condition(self) -> bool:
        """True for a conditional run that also takes a permutation state per model (``data.states = "run"``)."""
        return states_beside_condition(self.config, self.condition_dim is not None)

    @property
    def binary_conditions(self) -> bool:
        """True when the run was trained on 0/1 conditions only."""
        return bool(self.info.get("binary_conditions", False))

    def sample(self, num: int = 1, *, seed: int = 0, states: Sequence[int] | None = None,
               conditions: Sequence[Sequence[float]] | None = None, sampler: Sampler | None = None,
               steps: int | None = None, mix: float | None = None,
               temperature: float | None = None) -> list[dict[str, torch.Tensor]]:
        """``num`` new state dicts (``num`` per condition for a conditional run), in memory.

        The same models :func:`rpgen.generation.generate` writes for the same arguments; for large
        models use that, which streams them to files. ``states``: the permutation state of each
        model (default: drawn with ``seed``).
        """
        if num < 1:
            raise RpgenError(f"num must be >= 1, got {num}")
        sampler, steps, temperature = self.sampling(sampler, steps, temperature)
        rng = torch.Generator().manual_seed(seed)
        selectors = self.draw_states(self.selectors(num=num, states=states, conditions=conditions, mix=mix), rng=rng,
                                     mix=mix)
        scheduler = make_scheduler(self.config.diffusion, sampler, steps, temperature)
        group = self.method.models_per_group(self.config, self.layout)  # as generate() groups them
        return [model for first in range(0, len(selectors), group)
                for model in self.sample_with(selectors[first:first + group], scheduler=scheduler, rng=rng)]

    def sampling(self, sampler: Sampler | None, steps: int | None, temperature: float | None
                 ) -> tuple[Sampler, int, float]:
        """The sampler, steps and temperature asked for, each None taken from the run's ``[sample]``;
        checked (one-line errors) before anything is sampled."""
        sampler = sampler or self.config.sample.sampler
        steps = steps or self.config.sample.steps
        temperature = self.config.sample.temperature if temperature is None else temperature
        if temperature == "auto":  # a config.toml edited by hand; training writes the number
            temperature = auto_temperature(self.condition_dim is not None)
        check_sampling(self.config.diffusion, sampler, steps, temperature)
        return sampler, steps, temperature

    def sample_with(self, selectors: Sequence[Selector], *, scheduler: Any, rng: torch.Generator
                    ) -> list[dict[str, torch.Tensor]]:
        """Complete state dicts, one per selector (permutation state, condition vector, or None for
        methods without states), sampled together with ``scheduler`` and ``rng``."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in selectors]
        for m, info, tensor in self.method.sample(self.model, self.layout, self.config, selectors, copied=self.copied,
                                                  scheduler=scheduler, rng=rng):
            out[m][info.name] = tensor
        return [{t.name: d[t.name] if t.generated else self.copied[t.name].clone() for t in self.layout.tensors}
                for d in out]

    def selectors(self, *, num: int, states: Sequence[int] | None = None,
                  conditions: Sequence[Sequence[float]] | None = None, mix: float | None = None) -> list:
        """What each of the models asked for is made for, checked against the run: permutation
        states, condition vectors (``num`` per condition; ``(condition, state)`` pairs when the run
        takes a state beside the condition, the state None to draw), or None (a state to draw, or a
        method without states)."""
        if not self.method.takes_selectors:
            if states is not None or conditions is not None or mix is not None:
                raise RpgenError(f"{self.path} is a {self.method.name} run: it takes no --state, --condition or --mix")
            return [None] * num
        if mix is not None:
            if not 0 < mix < 1:
                raise RpgenError(f"--mix {mix}: must be between 0 and 1 (the weight of the second state)")
            if self.condition_dim is not None or states is not None:
                raise RpgenError(f"--mix draws the states it mixes: {self.path} takes it without --state or "
                                 "--condition, and only when unconditional")
            if self.num_states < 2:
                raise RpgenError(f"--mix needs two permutation states; {self.path} has one")
        if self.condition_dim is not None:
            if states is not None and not self.states_beside_condition:
                raise RpgenError(f"{self.path} is a conditional run without permutation states; use --condition, "
                                 "not --state")
            if not conditions:
                raise RpgenError(f"{self.path} is a conditional run: give at least one --condition "
                                 f"(a vector of length {self.condition_dim})")
            conditions = [[float(v) for v in c] for c in conditions]
            check_conditions(conditions, dim=self.condition_dim, binary=self.binary_conditions)
            if not self.states_beside_condition:
                return [c for c in conditions for _ in range(num)]
            per_model = [None] * num if states is None else self._checked_states(states, num)
            return [(c, s) for c in conditions for s in per_model]
        if conditions is not None:
            raise RpgenError(f"{self.path} is an unconditional run (trained without conditions.json); "
                             "it takes no --condition")
        return [None] * num if states is None else self._checked_states(states, num)

    def _checked_states(self, states: Sequence[int], num: int) -> list[int]:
        states = list(states)
        if len(states) != num:
            raise RpgenError(f"got {len(states)} permutation states for {num} models")
        for s in states:
            if not 0 <= s < self.num_states:
                raise RpgenError(f"permutation state {s} out of range: this run has states 0..{self.num_states - 1}")
        return states

    def draw_states(self, selectors: list, *, rng: torch.Generator, mix: float | None = None) -> list:
        """``selectors`` with states left to draw (None) drawn at random from ``rng``.

        With ``mix``, each model gets a mixture ``{i: 1 - mix, j: mix}`` of two states drawn at
        random from different training runs (when the run knows more than one; else any two
        distinct states): a selector between the states it was trained on. A run with states
        beside the condition gets a state drawn for each ``(condition, None)`` pair.
        """
        if self.states_beside_condition and self.method.takes_selectors:
            drawn = torch.randint(0, self.num_states, (len(selectors),), generator=rng).tolist()
            return [(c, d if s is None else s) for (c, s), d in zip(selectors, drawn)]
        if not self.method.takes_selectors or self.condition_dim is not None or selectors[0] is not None:
            return selectors
        if mix is None:
            return torch.randint(0, self.num_states, (len(selectors),), generator=rng).tolist()
        run_of_state = self.run_of_state()
        mixed = []
        for _ in selectors:
            i, j = torch.randperm(self.num_states, generator=rng)[:2].tolist()
            if len(set(run_of_state)) > 1:
                others = [s for s in range(self.num_states) if run_of_state[s] != run_of_state[i]]
                j = others[int(torch.randint(0, len(others), (1,), generator=rng))]
            mixed.append({i: 1 - mix, j: mix})
        return mixed

    def run_of_state(self) -> list[int]:
        """The training run of each permutation state (all 0 when the run did not record runs)."""
        state_of, run_of = self.info.get("state_of_checkpoint"), self.info.get("run_of_checkpoint")
        if not state_of or not run_of:
            return [0] * self.num_states
        out = [0] * self.num_states
        for state, run in zip(state_of, run_of):
            out[state] = run
        return out


def start_run_dir(run_dir: Path, config: Config, layout: Layout, reference: LazyCheckpoint, paths: Sequence[Path], *,
                  overwrite: bool, conditions: torch.Tensor | None = None, num_processes: int = 1,
                  runs: Runs | None = None, state_of: Sequence[int] | None = None,
                  sizing: dict | None = None) -> None:
    """Write a new run's static files, all at once (the directory appears complete or not at all)."""
    state_of = list(range(len(paths))) if state_of is None else list(state_of)
    info = {
        "num_checkpoints": len(paths),
        "num_states": max(state_of) + 1,
        "checkpoint_files": [p.name for p in paths],
        "state_of_checkpoint": state_of,
        "run_of_checkpoint": list(runs.index) if runs is not None else None,
        "sizing": sizing,
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
    for name in (TOKENIZER, RUN_INFO, COPIED):
        if not (run_dir / name).is_file():
            raise RpgenError(f"{run_dir} is an incomplete run directory (no {name})")
    # Every file is checked as it is read: one line naming the file, never a traceback or NaN models.
    try:
        layout = Layout.from_json((run_dir / TOKENIZER).read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, RpgenError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise RpgenError(f"{run_dir / TOKENIZER}: not a valid tokenizer file ({first_line(e, typed=False)})") from None
    info = read_json_object(run_dir / RUN_INFO)
    num_states, cond_dim = info.get("num_states", info.get("num_checkpoints")), info.get("condition_dim")
    if not (isinstance(num_states, int) and num_states >= 1) or not (cond_dim is None or isinstance(cond_dim, int)):
        raise RpgenError(f"{run_dir / RUN_INFO}: num_states (or num_checkpoints) must be a positive integer and "
                         f"condition_dim an integer or absent, got {num_states!r} and {cond_dim!r}")
    if config.model.mamba_impl == "cuda" and not (torch.device(device).type == "cuda" and mamba_ssm_available()):
        config = config.replace("model", mamba_impl="torch")  # same parameter names
    model = method.build(config, layout, num_states=num_states, cond_dim=cond_dim)
    tensors = read_tensors(weights)
    check_finite(tensors, name=weights)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise RpgenError(f"{weights}: cannot load the trained model ({first_line(e, typed=False)})") from None
    copied = read_tensors(run_dir / COPIED)
    want = {t.name: (t.shape, t.dtype) for t in layout.tensors if not t.generated}
    have = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in copied.items()}
    for name in sorted(want.keys() | have.keys()):
        if have.get(name) != want.get(name):
            raise RpgenError(f"{run_dir / COPIED}: tensor {name!r} is {have.get(name) or 'missing'}; "
                             f"{TOKENIZER} expects {want.get(name) or 'no such tensor'}")
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
        raise RpgenError(f"{path}: cannot restore the training state ({first_line(e)}); start the run again") from None
    if ema is not None:
        for i, e in enumerate(ema):
            e.copy_(tensors.get(f"ema.{i}", e))
    if process_index == 0:
        rng.set_state(tensors["rng"])
    else:  # only the main process's RNG is saved; the others continue on a fresh stream
        rng.manual_seed(rng.initial_seed() * 1_000_003 + step)
    return step
