"""Sampling new parameter sets from a trained run (any method) and writing them as safetensors.

The method yields each model's generated tensors in layout order (:meth:`rpgen.methods.Method.sample`);
:class:`ModelWriter` appends each to its file as it comes (a model folder's shards: the file the
zoo's index names), with the copied tensors in between, so peak memory is the method's working
set and about one tensor, not the whole model. Models take the training checkpoints' form
(:mod:`rpgen.outputs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from rpgen import resources
from rpgen.conditions import check_conditions
from rpgen.config import Sampler
from rpgen.diffusion import check_sampling, make_scheduler
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir
from rpgen.methods.base import Selector
from rpgen.outputs import output_form
from rpgen.progress import progress_bar
from rpgen.run import Run, load_run
from rpgen.safetensors_io import SafetensorsWriter
from rpgen.tokenizer import Layout, TensorInfo


def sample_models(run: Run, selectors: Sequence[Selector], *, scheduler, rng: torch.Generator
                  ) -> list[dict[str, torch.Tensor]]:
    """Complete state dicts, one per selector (permutation state, condition vector, or None for
    methods without states), sampled together and held in memory.

    Same tensors as :func:`generate` writes for the same ``rng`` state; for large models use
    :func:`generate`, which streams them to files.
    """
    out: list[dict[str, torch.Tensor]] = [{} for _ in selectors]
    for m, info, tensor in run.method.sample(run.model, run.layout, run.config, selectors, copied=run.copied,
                                             scheduler=scheduler, rng=rng):
        out[m][info.name] = tensor
    return [{t.name: d[t.name] if t.generated else run.copied[t.name].clone() for t in run.layout.tensors}
            for d in out]


class ModelWriter:
    """Writes one generated model as its tensors come, in the layout's key order.

    ``files`` maps each tensor name to its file; each file gets one streaming writer whose
    entries are that file's tensors in layout order (one file, or the shards of a model folder).
    """

    def __init__(self, files: dict[str, Path], layout: Layout, copied: dict[str, torch.Tensor],
                 metadata: dict[str, str]) -> None:
        self._order = list(layout.tensors)
        self._copied = copied
        self._files = files
        entries: dict[Path, list] = {}
        for t in self._order:
            entries.setdefault(files[t.name], []).append((t.name, getattr(torch, t.dtype), t.shape))
        self._writers = {path: SafetensorsWriter(path, items, metadata=metadata) for path, items in entries.items()}
        self._next = 0
        self._write_copied()

    def put(self, info: TensorInfo, tensor: torch.Tensor) -> None:
        if not bool(torch.isfinite(tensor).all()):
            raise RpgenError(f"generated tensor {info.name} holds NaN or inf values: the run's model is broken "
                             "(retrain it, e.g. with a lower train.lr); nothing was written")
        self._writers[self._files[info.name]].write(info.name, tensor)
        self._next += 1
        self._write_copied()

    def _write_copied(self) -> None:
        while self._next < len(self._order) and not self._order[self._next].generated:
            name = self._order[self._next].name
            self._writers[self._files[name]].write(name, self._copied[name])
            self._next += 1

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def generate(run_dir: str | Path, out_dir: str | Path, *, num: int, seed: int = 0,
             sampler: Sampler | None = None, steps: int | None = None, states: Sequence[int] | None = None,
             overwrite: bool = False, device: str | torch.device | None = None,
             progress: bool = True, conditions: Sequence[Sequence[float]] | None = None) -> list[Path]:
    """Write generated models to ``out_dir/NNNN.safetensors``; return their paths.

    A run trained on peft adapter folders writes adapter folders ``out_dir/NNNN/`` instead
    (``adapter_config.json`` + ``adapter_model.safetensors``), which peft loads unchanged; a run
    trained on transformers model folders writes model folders ``out_dir/NNNN/`` (``config.json``,
    weights sharded like the zoo's), which ``from_pretrained`` loads unchanged (:mod:`rpgen.outputs`).

    ``states`` picks the permutation state of each of the ``num`` models (default: drawn at random
    with ``seed``). A conditional run (trained with a ``conditions.json``) takes ``conditions``
    instead: ``num`` models per condition vector, condition after condition; each file's metadata
    and ``generation.json`` record what it was made for. Methods without states (p-diff) take
    neither. ``device`` defaults to the accelerator Accelerate finds (else the CPU). The same run,
    seed, settings and device give the same files. A model with a non-finite value is an error:
    nothing is written.
    """
    if num < 1:
        raise RpgenError(f"--num must be >= 1, got {num}")
    if device is None:
        from accelerate import PartialState

        device = PartialState().device
    run = load_run(run_dir, device=device)
    sampler = sampler or run.config.sample.sampler
    steps = steps or run.config.sample.steps
    check_sampling(run.config.diffusion, sampler, steps)
    selectors, metadata, record = _selectors(run, num=num, seed=seed, states=states, conditions=conditions)
    out_dir = Path(out_dir)
    per_group = run.method.models_per_group(run.config, run.layout)
    memory = run.method.generation_memory(run.config, run.layout, num_states=run.num_states,
                                          models_at_once=min(len(selectors), per_group))
    if torch.device(device).type == "cpu" and memory is not None:  # before anything of size ``num`` is made
        resources.check_resources(
            f"generating {len(selectors)} models of {run.layout.num_params:,} parameters from {run.path}",
            memory=memory, disk=len(selectors) * resources.model_bytes(run.layout), disk_path=out_dir.parent)
    rng = torch.Generator().manual_seed(seed)
    if run.method.takes_selectors and selectors[0] is None:  # states drawn at random, after the checks
        selectors = torch.randint(0, run.num_states, (len(selectors),), generator=rng).tolist()
        metadata = [{"permutation_state": str(s)} for s in selectors]
        record = {"permutation_states": selectors}
    scheduler = make_scheduler(run.config.diffusion, sampler, steps)
    form = output_form(run.path)
    names = [t.name for t in run.layout.tensors]
    paths = []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task(f"generating ({run.method.name})", total=len(selectors))
        for first in range(0, len(selectors), per_group):
            group = selectors[first:first + per_group]
            slots = [form.open(tmp, i, names) for i in range(first, first + len(group))]
            writers = [ModelWriter(slot.files, run.layout, run.copied,
                                   {**slot.metadata, "rpgen_run": str(run.path.resolve()), "method": run.method.name,
                                    **meta})
                       for slot, meta in zip(slots, metadata[first:first + per_group])]
            for m, info, tensor in run.method.sample(run.model, run.layout, run.config, group, copied=run.copied,
                                                     scheduler=scheduler, rng=rng):
                writers[m].put(info, tensor)
            for w in writers:
                w.close()
            paths += [out_dir / slot.name for slot in slots]
            bar.update(task, advance=len(group))
        (tmp / "generation.json").write_text(json.dumps({
            "run_dir": str(run.path.resolve()), "method": run.method.name, "num": num, "seed": seed,
            "sampler": sampler, "steps": steps, **record,
        }, indent=1), encoding="utf-8")
    return paths


def _selectors(run: Run, *, num: int, seed: int, states: Sequence[int] | None,
               conditions: Sequence[Sequence[float]] | None) -> tuple[list, list[dict[str, str]], dict]:
    """What each model is made for (checked against the run), its file metadata, and the
    generation.json record. Random permutation states are left as None, to be drawn later."""
    if not run.method.takes_selectors:
        if states is not None or conditions is not None:
            raise RpgenError(f"{run.path} is a {run.method.name} run: it takes no --state or --condition")
        return [None] * num, [{}] * num, {}
    if run.condition_dim is not None:
        conditions = _checked_conditions(run, states=states, conditions=conditions)
        selectors = [c for c in conditions for _ in range(num)]
        return selectors, [{"condition": json.dumps(c)} for c in selectors], {"conditions": selectors}
    if conditions is not None:
        raise RpgenError(f"{run.path} is an unconditional run (trained without conditions.json); "
                         "it takes no --condition")
    if states is None:
        return [None] * num, [{}] * num, {}
    states = list(states)
    if len(states) != num:
        raise RpgenError(f"got {len(states)} permutation states for {num} models")
    for s in states:
        if not 0 <= s < run.num_states:
            raise RpgenError(f"permutation state {s} out of range: this run has states 0..{run.num_states - 1}")
    return states, [{"permutation_state": str(s)} for s in states], {"permutation_states": states}


def _checked_conditions(run: Run, *, states: Sequence[int] | None,
                        conditions: Sequence[Sequence[float]] | None) -> list[list[float]]:
    """The conditions asked of a conditional run, as float lists, checked against the run."""
    if states is not None:
        raise RpgenError(f"{run.path} is a conditional run (no permutation states); use --condition, not --state")
    if not conditions:
        raise RpgenError(f"{run.path} is a conditional run: give at least one --condition "
                         f"(a vector of length {run.condition_dim})")
    conditions = [[float(v) for v in c] for c in conditions]
    check_conditions(conditions, dim=run.condition_dim, binary=run.binary_conditions)
    return conditions
