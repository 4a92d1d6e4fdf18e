"""Sampling new parameter sets from a trained run and writing them as safetensors.

The backbone runs once per model; tokens are then denoised in chunks of at most
``sample.chunk_tokens`` rows (the tokens of several small models share a chunk), and each tensor
is detokenised and appended to its safetensors file as soon as its last token is denoised. Peak
memory is the generator + one chunk + about one tensor, not the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence, get_args

import torch

from rpgen import resources
from rpgen.adapters import model_slot
from rpgen.conditions import check_conditions
from rpgen.config import Sampler
from rpgen.diffusion import make_scheduler, sample_tokens
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir
from rpgen.progress import progress_bar
from rpgen.regression import predict_tokens
from rpgen.run import Run, load_run, run_method
from rpgen.safetensors_io import SafetensorsWriter
from rpgen.tokenizer import Layout, TensorInfo, detokenize_tensor


Selectors = Sequence[int] | Sequence[Sequence[float]]  # permutation states, or conditions of a conditional run


def sample_models(run: Run, states: Selectors, *, scheduler, rng: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Complete state dicts, one per permutation state (or condition vector, for a conditional
    run), denoised together (held in memory).

    Same tokens as :func:`generate` writes for the same ``rng`` state; for large models use
    :func:`generate`, which streams them to files.
    """
    models = [TensorAssembler(run.layout) for _ in states]
    out: list[dict[str, torch.Tensor]] = [{} for _ in states]
    for m, tokens in iter_tokens(run, states, scheduler=scheduler, rng=rng):
        for info, tensor in models[m].add(tokens):
            out[m][info.name] = tensor
    return [{t.name: d[t.name] if t.generated else run.copied[t.name].clone() for t in run.layout.tensors}
            for d in out]


def iter_tokens(run: Run, states: Selectors, *, scheduler, rng: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
    """Denoised tokens in sequence order: (model index in ``states``, (n, S) tokens of that model).

    The backbone runs once for all models; their tokens are stacked (M * L rows) and denoised
    in chunks of ``sample.chunk_tokens`` rows, each chunk split again at model boundaries.
    """
    generator = run.generator
    device = generator.pos_emb.device
    with torch.no_grad():
        protos = generator.prototypes(torch.tensor(list(states), device=device))  # (M, L, D)
    m, l, d = protos.shape
    protos = protos.reshape(m * l, d)
    chunk = run.config.sample.chunk_tokens
    for start in range(0, m * l, chunk):
        if run.config.model.method == "mse":  # the no-diffusion ablation: one forward pass
            x = predict_tokens(generator, protos[start:start + chunk]).cpu()  # (n, S)
        else:
            x = sample_tokens(generator, protos[start:start + chunk], scheduler, rng=rng).cpu()  # (n, S)
        pos, stop = start, start + x.shape[0]
        while pos < stop:
            model = pos // l
            end = min(stop, (model + 1) * l)
            yield model, x[pos - start:end - start]
            pos = end


class TensorAssembler:
    """Collects one model's tokens in order; returns each generated tensor once its tokens are in."""

    def __init__(self, layout: Layout) -> None:
        self._todo = [(info, sl.stop - sl.start) for info, sl in layout.token_slices()]
        self._pending: list[torch.Tensor] = []
        self._have = 0

    def add(self, tokens: torch.Tensor) -> list[tuple[TensorInfo, torch.Tensor]]:
        """tokens: (n, S), the next tokens of the sequence -> the tensors they complete."""
        self._pending.append(tokens)
        self._have += tokens.shape[0]
        done = []
        while self._todo and self._have >= self._todo[0][1]:
            info, n = self._todo.pop(0)
            pending = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
            done.append((info, detokenize_tensor(pending[:n], info)))
            self._pending = [pending[n:]] if pending.shape[0] > n else []
            self._have -= n
        return done

    @property
    def finished(self) -> bool:
        return not self._todo


class ModelWriter:
    """Writes one generated model to safetensors as its tensors complete, in the layout's key order."""

    def __init__(self, path: Path, layout: Layout, copied: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        self._order = list(layout.tensors)
        self._copied = copied
        self._file = SafetensorsWriter(path, [(t.name, getattr(torch, t.dtype), t.shape) for t in self._order],
                                       metadata=metadata)
        self._next = 0
        self._write_copied()

    def put(self, info: TensorInfo, tensor: torch.Tensor) -> None:
        self._file.write(info.name, tensor)
        self._next += 1
        self._write_copied()

    def _write_copied(self) -> None:
        while self._next < len(self._order) and not self._order[self._next].generated:
            name = self._order[self._next].name
            self._file.write(name, self._copied[name])
            self._next += 1

    def close(self) -> None:
        self._file.close()


def generate(run_dir: str | Path, out_dir: str | Path, *, num: int, seed: int = 0,
             sampler: Sampler | None = None, steps: int | None = None, states: Sequence[int] | None = None,
             overwrite: bool = False, device: str | torch.device | None = None,
             progress: bool = True, conditions: Sequence[Sequence[float]] | None = None) -> list[Path]:
    """Write generated models to ``out_dir/NNNN.safetensors``; return their paths.

    A run trained on peft adapter folders writes adapter folders ``out_dir/NNNN/`` instead
    (``adapter_config.json`` + ``adapter_model.safetensors``), which peft loads unchanged.

    ``states`` picks the permutation state of each of the ``num`` models (default: drawn at random
    with ``seed``). A conditional run (trained with a ``conditions.json``) takes ``conditions``
    instead: ``num`` models per condition vector, condition after condition; each file's metadata
    and ``generation.json`` record what it was made for. ``device`` defaults to the accelerator
    Accelerate finds (else the CPU). The same run, seed, settings and device give the same files.
    """
    if num < 1:
        raise RpgenError(f"--num must be >= 1, got {num}")
    if sampler is not None and sampler not in get_args(Sampler):
        raise RpgenError(f"--sampler {sampler!r}: choose {', '.join(get_args(Sampler))}")
    if steps is not None and steps < 1:
        raise RpgenError(f"--steps must be >= 1, got {steps}")
    if device is None:
        from accelerate import PartialState

        device = PartialState().device
    if run_method(run_dir) == "pdiff":
        from rpgen.pdiff import generate_pdiff

        if states is not None or conditions is not None:
            raise RpgenError(f"{run_dir} is a p-diff run: it takes no --state or --condition")
        return generate_pdiff(run_dir, out_dir, num=num, seed=seed, sampler=sampler, steps=steps,
                              overwrite=overwrite, device=device, progress=progress)
    run = load_run(run_dir, device=device)
    sampler = sampler or run.config.sample.sampler
    steps = steps or run.config.sample.steps
    conditional = run.condition_dim is not None
    if conditional:
        conditions = _checked_conditions(run, states=states, conditions=conditions)
    elif conditions is not None:
        raise RpgenError(f"{run_dir} is an unconditional run (trained without conditions.json); "
                         "it takes no --condition")
    count = num * len(conditions) if conditional else num
    out_dir = Path(out_dir)
    per_group = max(1, run.config.sample.chunk_tokens // run.layout.num_tokens)
    if torch.device(device).type == "cpu":  # before anything of size ``count`` is made
        resources.check_resources(
            f"generating {count} models of {run.layout.num_params:,} parameters from {run.path}",
            memory=resources.generation_memory(run.config, run.layout, num_states=run.generator.num_states,
                                               models_at_once=min(count, per_group)),
            disk=count * resources.model_bytes(run.layout), disk_path=out_dir.parent)
    rng = torch.Generator().manual_seed(seed)
    if conditional:
        selectors: list = [c for c in conditions for _ in range(num)]
        metadata = [{"condition": json.dumps(c)} for c in selectors]
        record: dict = {"conditions": selectors}
    else:
        selectors = _states_per_model(run, num=num, states=states, rng=rng)
        metadata = [{"permutation_state": str(s)} for s in selectors]
        record = {"permutation_states": selectors}
    scheduler = make_scheduler(run.config.diffusion, sampler, steps)
    paths = []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("generating", total=len(selectors))
        for first in range(0, len(selectors), per_group):
            group = selectors[first:first + per_group]
            slots = [model_slot(tmp, i, run_dir=run.path) for i in range(first, first + len(group))]
            names = [name for _, name in slots]
            writers = [ModelWriter(file, run.layout, run.copied, {"rpgen_run": str(run.path.resolve()), **meta})
                       for (file, _), meta in zip(slots, metadata[first:first + per_group])]
            assemblers = [TensorAssembler(run.layout) for _ in group]
            for m, tokens in iter_tokens(run, group, scheduler=scheduler, rng=rng):
                for info, tensor in assemblers[m].add(tokens):
                    writers[m].put(info, tensor)
            for w in writers:
                w.close()
            paths += [out_dir / name for name in names]
            bar.update(task, advance=len(group))
        (tmp / "generation.json").write_text(json.dumps({
            "run_dir": str(run.path.resolve()), "num": num, "seed": seed, "sampler": sampler,
            "steps": steps, **record,
        }, indent=1), encoding="utf-8")
    return paths


def _states_per_model(run: Run, *, num: int, states: Sequence[int] | None, rng: torch.Generator) -> list[int]:
    """The permutation state of each model: as given (checked), or drawn at random."""
    num_states = run.generator.num_states
    if states is None:
        return torch.randint(0, num_states, (num,), generator=rng).tolist()
    states = list(states)
    if len(states) != num:
        raise RpgenError(f"got {len(states)} permutation states for {num} models")
    for s in states:
        if not 0 <= s < num_states:
            raise RpgenError(f"permutation state {s} out of range: this run has states 0..{num_states - 1}")
    return states


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
