"""Sampling new parameter sets from a trained run and writing them as safetensors.

The backbone runs once per model; tokens are then denoised in chunks of at most
``sample.chunk_tokens`` rows, so memory is bounded by the chunk, not by the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, get_args

import torch

from rpgen.checkpoints import save_state_dict
from rpgen.config import Sampler
from rpgen.diffusion import make_scheduler, sample_tokens
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir
from rpgen.progress import progress_bar
from rpgen.regression import predict_tokens
from rpgen.run import Run, load_run, run_method
from rpgen.tokenizer import detokenize


def sample_models(run: Run, states: Sequence[int], *, scheduler, rng: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Complete state dicts, one per permutation state, denoised together.

    The tokens of all models are stacked and denoised in chunks of ``sample.chunk_tokens``
    rows, so small models share denoiser calls and large ones are split.
    """
    generator = run.generator
    device = generator.pos_emb.device
    with torch.no_grad():
        protos = generator.prototypes(torch.tensor(list(states), device=device))  # (M, L, D)
    m, l, d = protos.shape
    protos = protos.reshape(m * l, d)
    chunk = run.config.sample.chunk_tokens
    if run.config.model.method == "mse":  # the no-diffusion ablation: one forward pass
        tokens = torch.cat([predict_tokens(generator, protos[i:i + chunk]).cpu() for i in range(0, m * l, chunk)])
        return [detokenize(t, run.layout, run.copied) for t in tokens.reshape(m, l, -1)]
    tokens = torch.cat([
        sample_tokens(generator, protos[i:i + chunk], scheduler, rng=rng).cpu()
        for i in range(0, m * l, chunk)
    ]).reshape(m, l, -1)  # (M, L, S)
    return [detokenize(t, run.layout, run.copied) for t in tokens]


def generate(run_dir: str | Path, out_dir: str | Path, *, num: int, seed: int = 0,
             sampler: Sampler | None = None, steps: int | None = None, states: Sequence[int] | None = None,
             overwrite: bool = False, device: str | torch.device | None = None,
             progress: bool = True) -> list[Path]:
    """Write ``num`` generated models to ``out_dir/NNNN.safetensors``; return their paths.

    ``states`` picks the permutation state of each model (default: drawn at random with
    ``seed``). ``device`` defaults to the accelerator Accelerate finds (else the CPU). The same
    run, seed, settings and device give the same files.
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

        if states is not None:
            raise RpgenError(f"{run_dir} is a p-diff run: it has no permutation states (drop --state)")
        return generate_pdiff(run_dir, out_dir, num=num, seed=seed, sampler=sampler, steps=steps,
                              overwrite=overwrite, device=device, progress=progress)
    run = load_run(run_dir, device=device)
    sampler = sampler or run.config.sample.sampler
    steps = steps or run.config.sample.steps
    num_states = run.generator.num_states
    rng = torch.Generator().manual_seed(seed)
    if states is None:
        states = torch.randint(0, num_states, (num,), generator=rng).tolist()
    states = list(states)
    if len(states) != num:
        raise RpgenError(f"got {len(states)} permutation states for {num} models")
    for s in states:
        if not 0 <= s < num_states:
            raise RpgenError(f"permutation state {s} out of range: this run has states 0..{num_states - 1}")
    scheduler = make_scheduler(run.config.diffusion, sampler, steps)
    paths = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("generating", total=num)
        per_group = max(1, run.config.sample.chunk_tokens // run.layout.num_tokens)
        for first in range(0, num, per_group):
            group = states[first:first + per_group]
            for i, state_dict in enumerate(sample_models(run, group, scheduler=scheduler, rng=rng), start=first):
                save_state_dict(state_dict, tmp / f"{i:04d}.safetensors",
                                metadata={"rpgen_run": str(run.path.resolve()), "permutation_state": str(states[i])})
                paths.append(out_dir / f"{i:04d}.safetensors")
            bar.update(task, advance=len(group))
        (tmp / "generation.json").write_text(json.dumps({
            "run_dir": str(run.path.resolve()), "num": num, "seed": seed, "sampler": sampler,
            "steps": steps, "permutation_states": states,
        }, indent=1), encoding="utf-8")
    return paths
