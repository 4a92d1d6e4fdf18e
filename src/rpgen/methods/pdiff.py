"""The p-diff baseline (arXiv 2402.13144): parameter autoencoder + DDPM in its latent space.

Implemented from the paper's description, for side-by-side comparison with RPG
(``model.method = "pdiff"``; settings in ``[pdiff]``; networks in :mod:`rpgen.models.autoencoder`):

1. Flatten each checkpoint's normalised parameters (:func:`rpgen.data.tokenizer.flatten`) into one
   vector of ``P`` values.
2. Train the autoencoder on whole vectors, with noise on the input (``input_noise``) and on the
   latent (``latent_noise``).
3. Encode the checkpoints; train a DDPM (rpgen's conv denoiser, unconditional) on the latents,
   scaled to unit std.
4. Generate: sample latents, decode, unflatten.

Single process, no resume, no permutation states or conditions. Glossary: ``K`` checkpoints,
``B`` checkpoints in a batch, ``P`` generated values, ``Z`` latent channels, ``M`` latent length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rpgen.config import Config
from rpgen.methods.diffusion import noised, sample_loop
from rpgen.methods.base import Method, Selector, Stage, TrainingSet
from rpgen.models.autoencoder import PDiffModel
from rpgen.data.tokenizer import Layout, TensorInfo, flatten, unflatten


class PDiff(Method):
    name = "pdiff"
    weights_file = "pdiff.safetensors"
    takes_selectors = False
    takes_conditions = False
    distributed = False
    mixed_precision = False

    def build(self, config: Config, layout: Layout, *, num_states: int, cond_dim: int | None) -> PDiffModel:
        return PDiffModel(config.pdiff, num_params=layout.num_params)

    def stages(self, model: PDiffModel, data: TrainingSet, *, rng: torch.Generator) -> Iterator[Stage]:
        config, device = data.config, data.device
        pc = config.pdiff
        vectors = torch.stack([flatten(ckpt, data.layout) for ckpt in data.checkpoints]).to(device)  # (K, P)
        k = vectors.shape[0]
        batch = min(config.train.batch_size, k)

        def ae_loss(ae: nn.Module) -> Tensor:
            x = vectors[torch.randint(0, k, (batch,), generator=rng).to(device)]  # (B, P)
            return F.mse_loss(ae(x), x)

        yield Stage("autoencoder", "p-diff autoencoder", model.ae, pc.ae_steps, pc.lr, ae_loss)

        # The DDPM learns the (fixed, noise-free) latents of the checkpoints, scaled to unit std.
        model.ae.eval()
        with torch.no_grad():
            latents = torch.cat([model.ae.encode(vectors[i:i + batch]) for i in range(0, k, batch)])  # (K, Z, M)
        mean, std = latents.mean(), latents.std().clamp_min(1e-8)
        model.latent_mean.copy_(mean.reshape(1))
        model.latent_std.copy_(std.reshape(1))
        latents = (latents - mean) / std

        def ddpm_loss(denoiser: nn.Module) -> Tensor:
            x0 = latents[torch.randint(0, k, (batch,), generator=rng).to(device)]  # (B, Z, M)
            noisy, t, target = noised(x0, config.diffusion, rng=rng)
            return F.mse_loss(denoiser(noisy, t), target)

        yield Stage("ddpm", "p-diff latent DDPM", model.denoiser, pc.ddpm_steps, pc.lr, ddpm_loss)

    def sample(self, model: PDiffModel, layout: Layout, config: Config, selectors: Sequence[Selector], *,
               copied: dict[str, Tensor], scheduler: Any, rng: torch.Generator
               ) -> Iterator[tuple[int, TensorInfo, Tensor]]:
        device = model.latent_mean.device
        z = sample_loop(model.denoiser, (len(selectors), *model.denoiser.shape), scheduler, rng=rng,
                        device=device)  # (B, Z, M)
        with torch.no_grad():
            vectors = model.ae.decode(z * model.latent_std + model.latent_mean).cpu()  # (B, P)
        for m, vector in enumerate(vectors):
            state_dict = unflatten(vector, layout, copied)
            for info in layout.generated:
                yield m, info, state_dict[info.name]

    def models_per_group(self, config: Config, layout: Layout) -> int:
        return 16
