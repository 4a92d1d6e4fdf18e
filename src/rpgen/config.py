"""Typed configuration: dataclasses per component, TOML files, ``--set a.b=value`` overrides.

Every setting has a default; a run's fully resolved config is written to ``RUN_DIR/config.toml``
so the run can be rebuilt. Unknown keys and values of the wrong type are errors that name the
key.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_type_hints

import tomli_w

from rpgen.configs.coerce import coerce
from rpgen.errors import RpgenError

MAX_TIMESTEPS = 100_000
"""Training timesteps at most: the schedule holds a few float arrays of this length (the paper uses 1,000)."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Backbone = Literal["mamba", "mamba2", "lstm", "transformer", "gmlp", "none"]
Prediction = Literal["epsilon", "sample", "v_prediction"]
Sampler = Literal["ddpm", "ddim", "dpm"]
Method = Literal["rpg", "mse", "pdiff"]


@dataclass
class DataConfig:
    checkpoint_dir: str = ""
    """Folder of training checkpoints (set by ``rpgen train CKPT_DIR``)."""
    token_size: int = 64
    """Values per token; tokens never cross tensor boundaries."""
    tokens_in_memory_mb: int = 1024
    """Checkpoint sets whose tokens fit in this many MB are held in RAM during training; larger
    ones are read from the files token by token as steps need them (0 = always). Same results."""
    states: Literal["auto", "checkpoint", "run", "none"] = "auto"
    """Permutation states: one per checkpoint, one per training run (runs from runs.json, rNN_
    file prefixes, or estimated: rpgen.data.lineage), or none (one shared state; a conditional run then
    sees the condition only). auto = one per run when the zoo has several runs (the original RPG
    code keeps one state per seed), else one per checkpoint (unconditional) or none (conditional).
    A conditional run with states "run" takes the state beside the condition: which of the
    solutions shared across conditions (e.g. one per initialisation seed) a model follows, drawn
    at generation time."""
    align: Literal["none", "weight-matching"] = "none"
    """weight-matching: before training, permute every checkpoint's hidden units to match the first
    checkpoint (Git Re-Basin), without changing what it computes; the run trains on, and
    evaluates against, the aligned copies in RUN_DIR/aligned/ (rpgen.align). Needs
    ``data.align_model`` or ``data.align_spec``."""
    align_model: str = ""
    """``module:factory`` or ``path/file.py:factory`` building the checkpoints' model, traced with
    torch.fx to find which hidden units may be permuted together."""
    align_spec: str = ""
    """A permutation spec file (JSON, rpgen.align.spec) instead of tracing a model."""
    center: Literal["auto", "tensor", "element", "base"] = "auto"
    """What tokens are measured from: tensor = each tensor's scalar mean (the paper); element = the
    checkpoints' mean at each element, so tokens carry only what varies between checkpoints; base =
    the values of ``data.base``. auto = base when a base model is given, else element
    (rpgen.data.tokenizer; bench/results/center.md)."""
    base: str = ""
    """A base model (a checkpoint file or folder of the zoo's form, e.g. the pretrained model that
    the checkpoints fine-tune) for ``data.center = "base"``."""
    tensor_order: Literal["model", "name"] = "model"
    """Order of the tensors in the token sequence. model: as the model defines it (a .pt file's
    saved order, a shard index's order, else a numeric-aware sort of the key: ``h.2`` before
    ``h.10``); name: a plain sort of the key names (``h.10`` before ``h.2``), for comparison and for
    runs trained with it. See rpgen.formats.checkpoints.tensor_order."""

    def __post_init__(self) -> None:
        _check(self.token_size >= 1, "data.token_size", self.token_size, "must be >= 1")
        _check(self.tokens_in_memory_mb >= 0, "data.tokens_in_memory_mb", self.tokens_in_memory_mb, "must be >= 0")


@dataclass
class ModelConfig:
    method: Method = "rpg"
    """rpg: backbone + per-token diffusion (the product). Baselines: mse = backbone + linear head
    regressing the tokens (the paper's no-diffusion ablation); pdiff = parameter autoencoder +
    latent DDPM (arXiv 2402.13144), configured in ``[pdiff]``."""
    backbone: Backbone = "mamba"
    d_model: int = 0
    """Width of the recurrent backbone and of the prototypes (independent of token_size); 0 = auto:
    sized from the zoo's distinct values (training runs x parameters, x conditions in a conditional
    zoo; rpgen.training.resolve)."""
    film: bool = True
    """The permutation state (or condition) also scales and shifts the backbone's input (FiLM), not
    only adds to it: a multiplicative path lets a small backbone tell many runs apart (bench/results/diverse.md)."""
    num_layers: int = 2
    d_state: int = 0
    """Mamba state size; 0 = auto (128 with CUDA kernels, 16 on CPU)."""
    headdim: int = 64
    """Mamba-2 only: channels per head (one scalar decay per head); must divide expand * d_model."""
    ssd_chunk: int = 64
    """Mamba-2 only: tokens per chunk of the state space duality (matmuls within a chunk, a short
    recurrence between chunks)."""
    d_conv: int = 4
    expand: int = 2
    mamba_impl: Literal["auto", "torch", "cuda"] = "auto"
    """``cuda`` needs mamba-ssm; ``auto`` uses it when importable and training on CUDA."""
    scan: Literal["chunked", "loop"] = "chunked"
    """Pure-PyTorch Mamba scan: ``chunked`` (lean memory, fast) or ``loop``, the reference recurrence
    (holds (batch, tokens, d_inner, d_state) tensors; kept for comparisons, bench/results/scan.md)."""
    scan_chunk: int = 32
    """Tokens per chunk of the chunked scan (measured in bench/results/scan.md)."""
    recompute: Literal["auto", "on", "off"] = "auto"
    """Mamba backbone on CPU: recompute each layer's activations in backward (torch.utils.checkpoint), a
    segment of tokens at a time (with the chunked scan), so training keeps one (batch, tokens, d_model)
    tensor per layer and one segment's activations instead of ~12 (batch, tokens, d_inner) tensors per
    layer, for about one more forward pass. ``auto``: on when those activations would pass 256 MiB."""
    num_heads: int = 4
    """Transformer backbone only."""
    causal: bool = True
    """Transformer backbone only."""
    denoiser_channels: tuple[int, ...] = (1, 16, 32, 64, 32, 16, 1)
    """Conv widths of the denoiser; the paper's are (1, 32, 64, 128, 64, 32, 1), 4x the compute."""
    kernel_size: int = 7

    def __post_init__(self) -> None:
        _check(self.d_model == 0 or (self.d_model >= 2 and self.d_model % 2 == 0), "model.d_model", self.d_model,
               "must be even and >= 2, or 0 (auto)")
        _check(self.num_layers >= 1, "model.num_layers", self.num_layers, "must be >= 1")
        _check(self.d_state >= 0, "model.d_state", self.d_state, "must be >= 0 (0 = auto)")
        _check(self.scan in ("chunked", "loop"), "model.scan", self.scan, "must be 'chunked' or 'loop'")
        _check(self.recompute in ("auto", "on", "off"), "model.recompute", self.recompute,
               "must be 'auto', 'on' or 'off'")
        _check(isinstance(self.scan_chunk, int) and self.scan_chunk >= 1, "model.scan_chunk", self.scan_chunk,
               "must be an integer >= 1")
        _check(isinstance(self.ssd_chunk, int) and self.ssd_chunk >= 1, "model.ssd_chunk", self.ssd_chunk,
               "must be an integer >= 1")
        _check(self.headdim >= 1 and (self.backbone != "mamba2" or (self.expand * self.d_model) % self.headdim == 0),
               "model.headdim", self.headdim, "must be >= 1 and divide model.expand * model.d_model")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "model.kernel_size", self.kernel_size,
               "must be odd and >= 1")
        for name in ("num_heads", "expand", "d_conv"):
            _check(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), "must be >= 1")
        _check_channels("model.denoiser_channels", self.denoiser_channels)
        _check(self.backbone != "transformer" or self.d_model % self.num_heads == 0,
               "model.num_heads", self.num_heads, "must divide model.d_model")


@dataclass
class DiffusionConfig:
    prediction: Prediction = "sample"
    """What the denoiser predicts: epsilon (the paper), sample (x0) or v_prediction."""
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        _check(2 <= self.num_train_timesteps <= MAX_TIMESTEPS, "diffusion.num_train_timesteps",
               self.num_train_timesteps, f"must be between 2 and {MAX_TIMESTEPS:,}")
        _check(0 < self.beta_start < self.beta_end < 1, "diffusion.beta_start", self.beta_start,
               "must satisfy 0 < beta_start < beta_end < 1")


@dataclass
class TrainConfig:
    steps: int = 0
    """Optimisation steps; 0 = auto: 2,000 for a zoo of one training run, 3,000 or more for several
    (and for a conditional zoo, which stands for more models than runs; rpgen.training.resolve)."""
    batch_size: int = 8
    """Checkpoints (sequences) per step run through the backbone."""
    diffusion_batch: int = 256
    """Tokens per step sent through the denoiser (random subset of the batch's tokens)."""
    lr: float = 0.0
    """Peak AdamW learning rate; 0 = auto: 2e-2 for a zoo of one training run at d_model 64, else
    3e-3 (2e-2 stalls on multi-run zoos and spikes at larger widths, rpgen.training.resolve)."""
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    """0 disables the EMA of generator weights."""
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    """auto = bf16 autocast on CUDA, full precision elsewhere."""
    evaluator: str = ""
    """An evaluator spec (as for ``rpgen evaluate``): score generated models every ``eval_every`` steps,
    stop once they are as good as the checkpoints (rpgen.training.stopping); "" = none."""
    stop_on_plateau: bool = True
    """Without an evaluator: stop in the schedule's second half once the loss stopped falling."""
    eval_every: int = 0
    """Steps between evaluations; 0 = auto (a tenth of the steps, at least 100)."""
    eval_models: int = 4
    """Models generated per evaluation."""
    stop_tolerance: float | Literal["auto"] = "auto"
    """How far below the checkpoints' mean the generated mean counts as reached; auto = 2 std of theirs."""

    def __post_init__(self) -> None:
        _check(self.eval_every >= 0, "train.eval_every", self.eval_every, "must be >= 1, or 0 (auto)")
        _check(self.stop_tolerance == "auto" or self.stop_tolerance >= 0, "train.stop_tolerance", self.stop_tolerance,
               "must be >= 0 or 'auto'")
        for name in ("batch_size", "diffusion_batch", "save_every", "log_every", "eval_models"):
            _check(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be >= 1")
        _check(self.steps >= 0, "train.steps", self.steps, "must be >= 1, or 0 (auto)")
        _check(math.isfinite(self.lr) and self.lr >= 0, "train.lr", self.lr, "must be > 0, or 0 (auto)")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay", self.weight_decay,
               "must be a finite number >= 0")
        _check(math.isfinite(self.grad_clip) and self.grad_clip > 0, "train.grad_clip", self.grad_clip,
               "must be a finite number > 0")
        _check(0 <= self.seed < 2**63, "train.seed", self.seed, "must be between 0 and 2**63 - 1")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "must be in [0, 1)")


@dataclass
class SampleConfig:
    sampler: Sampler = "ddim"
    steps: int = 60
    temperature: float | Literal["auto"] = "auto"
    """Standard deviation of the noise sampling starts from (ddim and dpm add none after it). Below 1
    the models move toward what the denoiser expects on average: less diverse, and on conditions the
    generator never saw more accurate (bench/results/unseen_multimodal_default.md); 0 gives one model
    per state (and condition), whatever the seed. auto = 1 for an unconditional run, 0.25 for a
    conditional one (rpgen.methods.diffusion.auto_temperature); training writes the number into the run's config."""
    chunk_tokens: int = 8192
    """Tokens denoised at once; bounds sampling memory."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "sample.steps", self.steps, "must be >= 1")
        _check(self.temperature == "auto" or (math.isfinite(self.temperature) and self.temperature >= 0),
               "sample.temperature", self.temperature, "must be a finite number >= 0 or 'auto'")
        _check(self.chunk_tokens >= 1, "sample.chunk_tokens", self.chunk_tokens, "must be >= 1")


@dataclass
class PDiffConfig:
    """The p-diff baseline (``model.method = "pdiff"``): autoencoder on the whole flattened
    parameter vector, then a DDPM on its latents. Uses ``[train]`` for seed, batch_size,
    warmup_steps and grad_clip, and ``[diffusion]``/``[sample]`` for the latent DDPM."""

    channels: tuple[int, ...] = (32, 64)
    """Encoder conv widths, each layer halving the length (the decoder mirrors them). (32, 64) at lr
    2e-3 and 1,500 + 1,000 steps generates 98.57% on the quickstart digits zoo against 98.64% for its
    checkpoints (bench/results/peers.md)."""
    latent_channels: int = 4
    kernel_size: int = 7
    input_noise: float = 0.001
    """Std of the noise added to the normalised parameters while training the autoencoder."""
    latent_noise: float = 0.1
    """Std of the noise added to the latents while training the autoencoder."""
    ae_steps: int = 1500
    ddpm_steps: int = 1000
    lr: float = 2e-3
    """AdamW learning rate of both stages (warm-up + cosine per stage)."""
    denoiser_channels: tuple[int, ...] = (1, 16, 32, 16, 1)
    """Conv widths of the latent denoiser (rpgen's conv denoiser over the flattened latent)."""

    def __post_init__(self) -> None:
        _check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "pdiff.channels", self.channels,
               "must be one or more positive widths")
        _check(self.latent_channels >= 1, "pdiff.latent_channels", self.latent_channels, "must be >= 1")
        _check(self.kernel_size % 2 == 1, "pdiff.kernel_size", self.kernel_size, "must be odd")
        _check(self.input_noise >= 0, "pdiff.input_noise", self.input_noise, "must be >= 0")
        _check(self.latent_noise >= 0, "pdiff.latent_noise", self.latent_noise, "must be >= 0")
        _check(self.lr > 0, "pdiff.lr", self.lr, "must be > 0")
        _check(self.ae_steps >= 1, "pdiff.ae_steps", self.ae_steps, "must be >= 1")
        _check(self.ddpm_steps >= 1, "pdiff.ddpm_steps", self.ddpm_steps, "must be >= 1")
        _check_channels("pdiff.denoiser_channels", self.denoiser_channels)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    pdiff: PDiffConfig = field(default_factory=PDiffConfig)

    def __post_init__(self) -> None:
        _check(self.sample.steps <= self.diffusion.num_train_timesteps, "sample.steps", self.sample.steps,
               f"must be at most diffusion.num_train_timesteps ({self.diffusion.num_train_timesteps})")

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: {k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some fields of one section changed (validated again)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise RpgenError(f"config {key} = {value!r} {why}")


def _check_channels(key: str, ch: tuple[int, ...]) -> None:
    _check(len(ch) >= 3 and len(ch) % 2 == 1 and ch[0] == 1 and ch[-1] == 1 and tuple(ch) == tuple(reversed(ch))
           and min(ch) >= 1, key, ch, "must be symmetric, odd-length, start and end with 1, every width >= 1")


def from_dict(data: dict[str, Any], *, base: Config | None = None, source: str = "config") -> Config:
    """Build a Config from nested dicts, on top of ``base`` (defaults when None)."""
    base = base or Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    updated = {}
    for name, values in data.items():
        if name not in sections:
            raise RpgenError(f"{source}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise RpgenError(f"{source}: [{name}] must be a table")
        current = getattr(base, name)
        hints = get_type_hints(type(current))
        known = {f.name for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise RpgenError(f"{source}: unknown key {name}.{key} (known: {', '.join(sorted(known))})")
            changes[key] = coerce(f"{name}.{key}", value, hints[key])
        updated[name] = dataclasses.replace(current, **changes)
    return dataclasses.replace(base, **updated)


def load_toml(path: str | Path, *, base: Config | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise RpgenError(f"config file {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RpgenError(f"{path}: invalid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise RpgenError(f"{path}: not a UTF-8 text file (byte {e.start}); save the config as UTF-8") from None
    return from_dict(data, base=base, source=str(path))


def preset_names() -> list[str]:
    """Names of the built-in TOML presets in ``rpgen/configs/``."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("rpgen.configs").iterdir()
                  if p.name.endswith(".toml"))


def preset(name: str) -> Config:
    """A built-in TOML preset, e.g. ``preset("quickstart")``."""
    if name not in preset_names():
        raise RpgenError(f"no preset named {name!r} (available: {', '.join(preset_names())})")
    with resources.as_file(resources.files("rpgen.configs") / f"{name}.toml") as path:
        return load_toml(path)


def config_from(config: Config | str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """A config from a Config, a TOML file or a built-in preset name (defaults when None), with
    ``--set``-style overrides applied."""
    if config is None:
        base = Config()
    elif isinstance(config, Config):
        base = config
    elif Path(config).is_file():
        base = load_toml(config)
    elif str(config) in preset_names():
        base = preset(str(config))
    else:
        raise RpgenError(f"--config {config}: no such file, and not a preset ({', '.join(preset_names())})")
    return apply_overrides(base, list(overrides))


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"train.lr=1e-3"`` -> ("train", "lr", 0.001); the value is parsed as a TOML value,
    falling back to a bare string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise RpgenError(f"--set {text!r}: expected section.key=value, e.g. train.steps=500")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    for text in overrides:
        section, key, value = parse_override(text)
        config = from_dict({section: {key: value}}, base=config, source=f"--set {text}")
    return config
