"""The p-diff baseline (arXiv 2402.13144): parameter autoencoder + DDPM in its latent space.

Implemented from the paper's description, for side-by-side comparison with RPG
(``model.method = "pdiff"``; settings in ``[pdiff]``):

1. Flatten each checkpoint's normalised parameters (:func:`rpgen.tokenizer.flatten`) into one
   vector of ``P`` values.
2. Train a 1-D conv autoencoder on the whole vectors, with noise augmentation on the input
   (std ``input_noise``, ~0.001) and on the latent (std ``latent_noise``, ~0.1).
3. Encode the checkpoints; train a DDPM (rpgen's conv denoiser, unconditional) on the latents.
4. Generate: sample latents, decode, unflatten.

The autoencoder sees the whole vector at once, so its activations grow linearly with ``P``
(what ``bench/peers.py`` measures). Single process only (no Accelerate/DDP), no resume.

Glossary: ``B`` checkpoints in a batch, ``P`` generated parameters, ``Q`` P padded to a multiple
of 2^(number of encoder layers), ``C`` channels, ``Z`` latent channels, ``M`` latent length.

RUN_DIR/ holds config.toml, tokenizer.json, copied.safetensors, run.json and metrics.jsonl as an
RPG run does, and ``pdiff.safetensors`` (autoencoder ``ae.*``, latent denoiser ``denoiser.*``,
latent ``latent_mean``/``latent_std``) when training finished.
"""

from __future__ import annotations

import json
import math
import time
from itertools import pairwise
from pathlib import Path
from typing import Callable, get_args

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rpgen import run as runfiles
from rpgen.adapters import model_slot
from rpgen.checkpoints import load_checkpoints, save_state_dict
from rpgen.config import Config, PDiffConfig, Sampler, load_toml
from rpgen.diffusion import alphas_cumprod, make_scheduler
from rpgen.errors import RpgenError
from rpgen.files import atomic_dir, atomic_path, check_output_dir
from rpgen.models.denoiser import ConvDenoiser
from rpgen.progress import progress_bar
from rpgen.tokenizer import Layout, fit_layout, flatten, unflatten

WEIGHTS = "pdiff.safetensors"


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ParamAutoencoder(nn.Module):
    """1-D conv autoencoder over a whole flattened parameter vector: (B, P) <-> (B, Z, M).

    Each encoder layer is a stride-2 conv + GroupNorm + LeakyReLU; the decoder mirrors it with
    transposed convs. Noise augmentation is applied only in training mode.
    """

    def __init__(self, cfg: PDiffConfig, *, num_params: int) -> None:
        super().__init__()
        self.num_params = num_params
        self.input_noise = cfg.input_noise
        self.latent_noise = cfg.latent_noise
        self.factor = 2 ** len(cfg.channels)
        self.padded = -(-num_params // self.factor) * self.factor  # Q
        k = cfg.kernel_size
        widths = (1, *cfg.channels)
        enc: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            enc += [nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2), _norm(c_out), nn.LeakyReLU(0.2)]
        enc.append(nn.Conv1d(widths[-1], cfg.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(cfg.latent_channels, widths[-1], 1), _norm(widths[-1]), nn.LeakyReLU(0.2)]
        ups = (*widths[:0:-1], widths[1])  # e.g. (64, 32, 16, 16): one transposed conv per encoder layer
        for c_in, c_out in pairwise(ups):
            dec += [nn.ConvTranspose1d(c_in, c_out, 4, stride=2, padding=1), _norm(c_out), nn.LeakyReLU(0.2)]
        dec.append(nn.Conv1d(widths[1], 1, k, padding=k // 2))
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_length(self) -> int:
        return self.padded // self.factor  # M

    def encode(self, x: Tensor) -> Tensor:
        """(B, P) -> (B, Z, M)"""
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        x = F.pad(x, (0, self.padded - self.num_params)).unsqueeze(1)  # (B, 1, Q)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """(B, Z, M) -> (B, P)"""
        return self.decoder(z).squeeze(1)[:, : self.num_params]

    def forward(self, x: Tensor) -> Tensor:
        """Training pass with both noise augmentations: (B, P) -> (B, P) reconstruction."""
        z = self.encode(x)
        if self.training and self.latent_noise > 0:
            z = z + self.latent_noise * torch.randn_like(z)
        return self.decode(z)


class LatentDenoiser(nn.Module):
    """Unconditional DDPM denoiser on flattened latents: rpgen's conv denoiser over one sequence.

    Latents (B, Z, M) are laid out position-major, (B, M * Z), so a conv sees all latent
    channels of neighbouring positions. A learnt constant condition gives the conv a bias per
    position.
    """

    def __init__(self, cfg: PDiffConfig, *, latent_channels: int, latent_length: int) -> None:
        super().__init__()
        self.shape = (latent_channels, latent_length)
        self.net = ConvDenoiser(token_size=latent_channels * latent_length, cond_dim=1,
                                channels=tuple(cfg.denoiser_channels), kernel_size=cfg.kernel_size)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """z: (B, Z, M) noisy latents, t: (B,) -> (B, Z, M) prediction."""
        b = z.shape[0]
        flat = z.transpose(1, 2).reshape(b, -1)  # (B, M * Z)
        out = self.net(flat, t, torch.ones(b, 1, device=z.device, dtype=z.dtype))
        return out.reshape(b, self.shape[1], self.shape[0]).transpose(1, 2)


def build_models(cfg: PDiffConfig, *, num_params: int) -> tuple[ParamAutoencoder, LatentDenoiser]:
    ae = ParamAutoencoder(cfg, num_params=num_params)
    return ae, LatentDenoiser(cfg, latent_channels=cfg.latent_channels, latent_length=ae.latent_length)


def _lr(step: int, *, lr: float, warmup: int, total: int) -> float:
    from rpgen.train import lr_factor

    return lr * lr_factor(step, warmup=warmup, total=total)


def train_pdiff(checkpoint_dir: str | Path, run_dir: str | Path, config: Config, *, overwrite: bool = False,
                progress: bool = True) -> Path:
    """Train the autoencoder, then the latent DDPM; write ``run_dir`` (see the module docstring)."""
    from accelerate import PartialState

    from rpgen.train import _start_run_dir

    run_dir, checkpoint_dir = Path(run_dir), Path(checkpoint_dir)
    check_output_dir(run_dir, overwrite=overwrite)
    paths, state_dicts = load_checkpoints(checkpoint_dir)
    layout = fit_layout(state_dicts, token_size=config.data.token_size)
    data = torch.stack([flatten(sd, layout) for sd in state_dicts])  # (K, P)
    device = PartialState().device
    config = config.replace("train", mixed_precision="no")
    _start_run_dir(run_dir, config, layout, state_dicts[0], paths, overwrite=overwrite)
    del state_dicts

    pc, tc = config.pdiff, config.train
    torch.manual_seed(tc.seed)
    rng = torch.Generator().manual_seed(tc.seed)
    ae, denoiser = build_models(pc, num_params=layout.num_params)
    ae, denoiser, data = ae.to(device), denoiser.to(device), data.to(device)
    k = data.shape[0]
    batch = min(tc.batch_size, k)
    log_path = run_dir / runfiles.METRICS
    start = time.perf_counter()

    def log(stage: str, step: int, loss: float) -> None:
        with log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage, "step": step, "loss": loss,
                                "elapsed_s": round(time.perf_counter() - start, 3)}) + "\n")

    with progress_bar(enabled=progress) as bar:
        # 1. autoencoder with input and latent noise augmentation
        def fit(module: nn.Module, stage: str, title: str, steps: int, loss_fn: Callable[[], Tensor]) -> None:
            """AdamW with warm-up + cosine over ``steps``, clipping, logging and a progress bar."""
            task = bar.add_task(title, total=steps, loss=float("nan"))
            opt = torch.optim.AdamW(module.parameters(), lr=pc.lr, weight_decay=tc.weight_decay)
            module.train()
            running = 0.0
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = _lr(step, lr=pc.lr, warmup=tc.warmup_steps, total=steps)
                loss = loss_fn()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(module.parameters(), tc.grad_clip)
                opt.step()
                running += loss.item()
                if (step + 1) % tc.log_every == 0 or step + 1 == steps:
                    count = (step % tc.log_every) + 1
                    log(stage, step + 1, running / count)
                    bar.update(task, loss=running / count)
                    running = 0.0
                bar.update(task, completed=step + 1)

        # 1. autoencoder with input and latent noise augmentation
        def ae_loss() -> Tensor:
            x = data[torch.randint(0, k, (batch,), generator=rng).to(device)]  # (B, P)
            return F.mse_loss(ae(x), x)

        fit(ae, "autoencoder", "p-diff autoencoder", pc.ae_steps, ae_loss)

        # 2. DDPM on the (fixed, noise-free) latents of the checkpoints, scaled to unit std
        ae.eval()
        with torch.no_grad():
            latents = torch.cat([ae.encode(data[i:i + batch]) for i in range(0, k, batch)])  # (K, Z, M)
        mean, std = latents.mean(), latents.std().clamp_min(1e-8)
        latents = (latents - mean) / std
        ab_all = alphas_cumprod(config.diffusion).to(device)

        def ddpm_loss() -> Tensor:
            x0 = latents[torch.randint(0, k, (batch,), generator=rng).to(device)]  # (B, Z, M)
            noise = torch.randn(x0.shape, generator=rng).to(device)
            t = torch.randint(0, config.diffusion.num_train_timesteps, (batch,), generator=rng).to(device)
            ab = ab_all[t].view(-1, 1, 1)
            noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            target = {"epsilon": noise, "sample": x0}.get(config.diffusion.prediction,
                                                          ab.sqrt() * noise - (1 - ab).sqrt() * x0)
            return F.mse_loss(denoiser(noisy, t), target)

        fit(denoiser, "ddpm", "p-diff latent DDPM", pc.ddpm_steps, ddpm_loss)

    weights = {f"ae.{n}": v for n, v in ae.state_dict().items()}
    weights.update({f"denoiser.{n}": v for n, v in denoiser.state_dict().items()})
    weights["latent_mean"], weights["latent_std"] = mean.reshape(1), std.reshape(1)
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file({n: v.detach().cpu().contiguous() for n, v in weights.items()}, str(tmp))
    return run_dir


def load_pdiff(run_dir: str | Path, *, device: torch.device | str = "cpu"
               ) -> tuple[Config, Layout, dict[str, Tensor], ParamAutoencoder, LatentDenoiser, Tensor, Tensor]:
    """A finished p-diff run: config, layout, copied tensors, models (eval mode), latent mean and std."""
    run_dir = Path(run_dir)
    if not (run_dir / WEIGHTS).is_file():
        raise RpgenError(f"{run_dir}: p-diff training has not finished (no {WEIGHTS}); train it again")
    config = load_toml(run_dir / runfiles.CONFIG)
    layout = Layout.from_json((run_dir / runfiles.TOKENIZER).read_text(encoding="utf-8"))
    ae, denoiser = build_models(config.pdiff, num_params=layout.num_params)
    weights = load_file(run_dir / WEIGHTS)
    try:
        ae.load_state_dict({n[3:]: v for n, v in weights.items() if n.startswith("ae.")})
        denoiser.load_state_dict({n[9:]: v for n, v in weights.items() if n.startswith("denoiser.")})
    except RuntimeError as e:
        raise RpgenError(f"{run_dir / WEIGHTS}: cannot load p-diff models ({str(e).splitlines()[0]})") from None
    copied = load_file(run_dir / runfiles.COPIED) if (run_dir / runfiles.COPIED).is_file() else {}
    return (config, layout, copied, ae.to(device).eval(), denoiser.to(device).eval(),
            weights["latent_mean"].to(device), weights["latent_std"].to(device))


@torch.no_grad()
def sample_latents(denoiser: LatentDenoiser, num: int, scheduler, *, rng: torch.Generator,
                   device: torch.device | str) -> Tensor:
    """(num, Z, M) latents (in the unit-std space) denoised from pure noise."""
    scheduler.set_timesteps(len(scheduler.timesteps))
    x = torch.randn((num, *denoiser.shape), generator=rng).to(device)
    for t in scheduler.timesteps:
        out = denoiser(x, torch.full((num,), int(t), device=device, dtype=torch.long))
        x = scheduler.step(out, t, x, generator=rng).prev_sample
    return x


def generate_pdiff(run_dir: str | Path, out_dir: str | Path, *, num: int, seed: int = 0,
                   sampler: Sampler | None = None, steps: int | None = None, overwrite: bool = False,
                   device: str | torch.device = "cpu", progress: bool = True, batch: int = 16) -> list[Path]:
    """Write ``num`` p-diff models to ``out_dir/NNNN.safetensors`` (same files as RPG's generate)."""
    if sampler is not None and sampler not in get_args(Sampler):
        raise RpgenError(f"--sampler {sampler!r}: choose {', '.join(get_args(Sampler))}")
    config, layout, copied, ae, denoiser, mean, std = load_pdiff(run_dir, device=device)
    sampler = sampler or config.sample.sampler
    steps = steps or config.sample.steps
    scheduler = make_scheduler(config.diffusion, sampler, steps)
    rng = torch.Generator().manual_seed(seed)
    paths = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("generating (p-diff)", total=num)
        for first in range(0, num, batch):
            z = sample_latents(denoiser, min(batch, num - first), scheduler, rng=rng, device=device)
            with torch.no_grad():
                vectors = ae.decode(z * std + mean).cpu()  # (b, P)
            for i, vector in enumerate(vectors, start=first):
                file, name = model_slot(tmp, i, run_dir=Path(run_dir))
                save_state_dict(unflatten(vector, layout, copied), file,
                                metadata={"rpgen_run": str(Path(run_dir).resolve()), "method": "pdiff"})
                paths.append(out_dir / name)
            bar.update(task, advance=len(vectors))
        (tmp / "generation.json").write_text(json.dumps({
            "run_dir": str(Path(run_dir).resolve()), "num": num, "seed": seed, "sampler": sampler,
            "steps": steps, "method": "pdiff",
        }, indent=1), encoding="utf-8")
    return paths
