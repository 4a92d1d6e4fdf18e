"""Writing generated models: sampled from a trained run (any method), streamed into safetensors.

The method yields each model's generated tensors in layout order (:meth:`rpgen.methods.Method.sample`);
:class:`ModelWriter` appends each to its file as it comes (a model folder's shards: the file the
zoo's index names), with the copied tensors in between, so peak memory is the method's working
set and about one tensor, not the whole model. Models take the training checkpoints' form
(:mod:`rpgen.formats.output_forms`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from rpgen.config import Sampler
from rpgen.data.tokenizer import Layout, TensorInfo
from rpgen.display import progress_bar
from rpgen.errors import RpgenError
from rpgen.formats.dtypes import dtype_from_name
from rpgen.formats.output_forms import OutputForm, output_form
from rpgen.formats.safetensors_io import SafetensorsWriter
from rpgen.generation.loaded import Run, load_run
from rpgen.generation.selection import draw_states, records, requested
from rpgen.methods.diffusion import make_scheduler
from rpgen.methods.memory import model_bytes
from rpgen.run_dir import load_config
from rpgen.safety.atomic import atomic_dir
from rpgen.safety.overwrite import check_not_overlapping
from rpgen.safety.resources import check_resources

EVALUATION_FILES = ("results.json", "report.md", "*.png")
"""What ``rpgen evaluate`` adds to a folder of generated models (its provenance, rpgen.safety.overwrite)."""


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
            entries.setdefault(files[t.name], []).append((t.name, dtype_from_name(t.dtype), t.shape))
        self._writers = {path: SafetensorsWriter(path, items, metadata=metadata) for path, items in entries.items()}
        self._next = 0
        self._write_copied()

    def put(self, info: TensorInfo, tensor: torch.Tensor) -> None:
        if not bool(torch.isfinite(tensor).all()):
            raise RpgenError(f"generated tensor {info.name} is non-finite (NaN or inf): the run's model is broken "
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
             progress: bool = True, conditions: Sequence[Sequence[float]] | None = None,
             mix: float | None = None, temperature: float | None = None) -> list[Path]:
    """Write generated models to ``out_dir/NNNN.safetensors``; return their paths.

    A run trained on peft adapter folders writes adapter folders ``out_dir/NNNN/`` instead
    (``adapter_config.json`` + ``adapter_model.safetensors``), which peft loads unchanged; a run
    trained on transformers model folders writes model folders ``out_dir/NNNN/`` (``config.json``,
    weights sharded like the zoo's), which ``from_pretrained`` loads unchanged (:mod:`rpgen.formats.output_forms`).

    ``states`` picks the permutation state of each of the ``num`` models (default: drawn at random
    with ``seed``); ``mix`` instead makes each model from a mixture of two states of different
    training runs, weights ``1 - mix`` and ``mix`` (:func:`rpgen.generation.selection.draw_states`): models
    between the runs. A conditional run (trained with a ``conditions.json``) takes ``conditions``
    instead: ``num`` models per condition vector, condition after condition; each file's metadata
    and ``generation.json`` record what it was made for. Methods without states (p-diff) take
    neither. ``temperature`` scales the noise sampling starts from (default: the run's
    ``sample.temperature``: 1 for an unconditional run, 0.25 for a conditional one): below 1, less
    diverse models nearer the denoiser's average.
    ``device`` defaults to the accelerator Accelerate finds (else the CPU). The same run, seed,
    settings and device give the same files. A model with a non-finite value is an error:
    nothing is written.
    """
    if num < 1:
        raise RpgenError(f"--num must be >= 1, got {num}")
    check_not_overlapping(out_dir, {"run directory": run_dir, **_zoo_of(run_dir)})
    if device is None:
        from accelerate import PartialState

        device = PartialState().device
    return write_models(load_run(run_dir, device=device), out_dir, num=num, seed=seed, sampler=sampler, steps=steps,
                        states=states, conditions=conditions, mix=mix, temperature=temperature, overwrite=overwrite,
                        progress=progress)


def _zoo_of(run_dir: str | Path) -> dict[str, str]:
    """{"run's checkpoint folder": path} when ``run_dir``'s config names one (the zoo it depends on)."""
    try:
        folder = load_config(run_dir).data.checkpoint_dir
    except RpgenError:  # not a run: load_run says so
        return {}
    return {"run's checkpoint folder": folder} if folder else {}


def write_models(run: Run, out_dir: str | Path, *, num: int, seed: int = 0, sampler: Sampler | None = None,
                 steps: int | None = None, states: Sequence[int] | None = None,
                 conditions: Sequence[Sequence[float]] | None = None, mix: float | None = None,
                 temperature: float | None = None, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """:func:`generate` from a run already loaded (its model may have been changed in memory)."""
    sampler, steps, temperature = run.sampling(sampler, steps, temperature)
    out_dir = Path(out_dir)
    _check_resources(run, out_dir, num * max(1, len(conditions or ())))  # before anything of size ``num`` is made
    selectors = requested(run, num=num, states=states, conditions=conditions, mix=mix)
    rng = torch.Generator().manual_seed(seed)
    selectors = draw_states(run, selectors, rng=rng, mix=mix)
    metadata, record = records(run, selectors)
    scheduler = make_scheduler(run.config.diffusion, sampler, steps, temperature)
    form = output_form(run.path)
    paths = []
    with atomic_dir(out_dir, overwrite=overwrite, later=EVALUATION_FILES) as tmp, \
            progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task(f"generating ({run.method.name})", total=len(selectors))
        for first, group in run.groups(selectors):
            names = _write_group(run, form, tmp, first, group, metadata[first:first + len(group)],
                                 scheduler=scheduler, rng=rng)
            paths += [out_dir / name for name in names]
            bar.update(task, advance=len(group))
        (tmp / "generation.json").write_text(json.dumps({
            "run_dir": str(run.path.resolve()), "method": run.method.name, "num": num, "seed": seed,
            "sampler": sampler, "steps": steps, "temperature": temperature, **record,
        }, indent=1), encoding="utf-8")
    return paths


def _check_resources(run: Run, out_dir: Path, count: int) -> None:
    """Refuse in one line when ``count`` models would not fit in RAM (on the CPU) or on disk."""
    device = next(run.model.parameters()).device
    per_group = run.method.models_per_group(run.config, run.layout)
    memory = run.method.generation_memory(run.config, run.layout, num_states=run.num_states,
                                          models_at_once=min(count, per_group))
    if device.type == "cpu" and memory is not None:
        check_resources(f"generating {count} models of {run.layout.num_params:,} parameters from {run.path}",
                        memory=memory, disk=count * model_bytes(run.layout), disk_path=out_dir.parent)


def _write_group(run: Run, form: OutputForm, folder: Path, first: int, group: Sequence, metadata: list[dict],
                 *, scheduler, rng: torch.Generator) -> list[str]:
    """Sample one group of models into ``folder``, each tensor written as it comes; their entry names."""
    slots = [form.open(folder, i, [t.name for t in run.layout.tensors]) for i in range(first, first + len(group))]
    writers = [ModelWriter(slot.files, run.layout, run.copied,
                           {**slot.metadata, "rpgen_run": str(run.path.resolve()), "method": run.method.name, **meta})
               for slot, meta in zip(slots, metadata)]
    for m, info, tensor in run.tensors(group, scheduler=scheduler, rng=rng):
        writers[m].put(info, tensor)
    for w in writers:
        w.close()
    return [slot.name for slot in slots]
