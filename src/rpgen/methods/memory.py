"""RAM and disk estimates of the token-wise methods, checked before a run starts
(:mod:`rpgen.safety.resources`).

The estimates are deliberately simple upper-bound-ish sums of the big buffers (generator
weights and optimiser state, backbone and denoiser activations, the largest tensor being
read or written); ``bench/scale.py`` prints them next to the measured peak RSS and
bench/results/peers_memory.md compares them with measured peaks.
"""

from __future__ import annotations

import math

import torch

from rpgen.config import Config
from rpgen.data.tokenizer import Layout
from rpgen.models.backbones import SEGMENT_BYTES, kept_floats_per_token, mamba_recomputes

BASELINE = 0.6e9
"""Python + torch + libraries after import, measured on the 2-core CPU machine (bytes)."""
TRAINING_BASELINE = 0.45e9
"""A training process before its tensors grow: Python, torch, Accelerate, the training loop (a
10K-parameter zoo peaks at 0.47 GB, bench/results/peers_memory.md)."""
DENOISER_COPIES = 6
"""Bytes of denoiser activations and gradients per (token, value, channel), in float32 units: 5.3-7.3
measured with 1,024-value tokens (bench/results/peers_memory.md)."""
RECOMPUTED_COPIES = 15
"""(b, l, d) float32 tensors alive at the peak of a step whose Mamba layers are recomputed in segments
(layer inputs and outputs, FiLM, the final norm, their gradients, and the allocator's free but kept
memory): about 14 measured at 1M and 3M parameters (token 64, batch 8)."""


def generator_params(config: Config, layout: Layout, *, num_states: int) -> int:
    """Parameter count of the generator, computed on the "meta" device (nothing allocated)."""
    from rpgen.models.generator import Generator

    with torch.device("meta"):
        generator = Generator(config.model, positions=layout.positions(), num_states=num_states,
                              token_size=layout.token_size)
    return sum(p.numel() for p in generator.parameters())


def _largest_tensor(layout: Layout) -> int:
    return max(t.numel for t in layout.tensors)


def _denoiser_activations(config: Config, layout: Layout, tokens: int) -> int:
    """Bytes of the denoiser's activations and their gradients for ``tokens`` tokens (one step)."""
    channels = sum(config.model.denoiser_channels)
    return tokens * layout.token_size * channels * 4 * DENOISER_COPIES


def _backbone_activations(config: Config, layout: Layout, batch: int) -> int:
    """Bytes the backbone holds at the peak of a training step (forward activations, their gradients)."""
    m = config.model
    length = layout.num_tokens
    work = 0  # per-layer scratch that does not grow with the sequence
    if m.backbone in ("mamba", "mamba2"):
        d_inner, d_state = m.expand * m.d_model, m.d_state or 16
        if m.backbone == "mamba" and m.scan == "loop":  # (b, l, e, n) decays, inputs and states, and gradients
            per_token = 2 * d_inner * (3 * d_state + 12)
        else:  # what a layer keeps (Mamba-1: + one (b, e, n) state per chunk, one chunk's (t, b, e, n) tensors)
            per_token = kept_floats_per_token(m)
            if m.backbone == "mamba":
                per_token += d_inner * d_state / m.scan_chunk
                work = 6 * batch * min(m.scan_chunk, length) * d_inner * d_state
            if mamba_recomputes(m, batch=batch, length=length):  # (b, l, d) tensors, and one segment at a time
                work += 3 * min(SEGMENT_BYTES // 4, batch * length * per_token)
                return int((batch * length * m.d_model * RECOMPUTED_COPIES + work) * 4)
        per_token = per_token * m.num_layers + 4 * m.d_model  # and the (b, l, d) inputs, FiLM and final norm
        return int((batch * length * per_token + work) * 4)
    if m.backbone == "transformer":
        per_token = 16 * m.d_model + 2 * m.num_heads * length
    elif m.backbone == "gmlp":
        per_token = 16 * m.d_model + length
    else:
        per_token = 16 * m.d_model
    return int(2 * batch * length * per_token * m.num_layers * 4)  # not re-measured: x2 for the gradients


def training_memory(config: Config, layout: Layout, *, num_checkpoints: int, in_memory: bool,
                    num_processes: int = 1) -> int:
    """Estimated peak RAM (bytes) of one training process (bench/results/peers_memory.md compares it with
    measured peaks)."""
    params = generator_params(config, layout, num_states=num_checkpoints)
    tc = config.train
    batch = math.ceil(min(tc.batch_size, num_checkpoints) / num_processes)
    tokens = min(math.ceil(tc.diffusion_batch / num_processes), batch * layout.num_tokens)
    weights = params * 4 * (4 + (tc.ema_decay > 0))  # weights, grads, Adam m and v, EMA
    activations = _backbone_activations(config, layout, batch) + _denoiser_activations(config, layout, tokens)
    data = num_checkpoints * layout.num_tokens * layout.token_size * 4 if in_memory else 0
    reading = 4 * 8 * _largest_tensor(layout)  # float64 copies in the statistics pass, done before training
    if layout.center == "element":
        reading += 12 * layout.num_params  # a float64 sum per element, then the float32 centres
    return int(TRAINING_BASELINE + weights + _centers(layout) + max(data + activations, reading))


def _centers(layout: Layout) -> int:
    """Bytes of the per-element centres a layout holds (float32), none for scalar centring."""
    return 0 if layout.center == "tensor" else 4 * layout.num_params


def training_disk(config: Config, layout: Layout, *, num_checkpoints: int) -> int:
    """Bytes a run directory grows to (generator + resumable state with optimiser, and a temp copy)."""
    params = generator_params(config, layout, num_states=num_checkpoints)
    return int(params * 4 * (1 + 2 * (3 + (config.train.ema_decay > 0))) + 16 * len(layout.tensors) * 200)


def generation_memory(config: Config, layout: Layout, *, num_states: int, models_at_once: int) -> int:
    """Estimated peak RAM (bytes) of :func:`rpgen.generation.generate`."""
    params = generator_params(config, layout, num_states=num_states)
    chunk = min(config.sample.chunk_tokens, models_at_once * layout.num_tokens)
    prototypes = models_at_once * layout.num_tokens * config.model.d_model * 4
    backbone = _backbone_activations(config, layout, 1) // 2  # no autograd; one model at a time
    chunk_bytes = chunk * layout.token_size * 4 * 6  # noise, output, scheduler buffers
    pending = (_largest_tensor(layout) + chunk * layout.token_size) * 4 + _largest_tensor(layout) * (8 + 8)
    return int(BASELINE + params * 4 + prototypes + backbone + chunk_bytes + _centers(layout)
               + _denoiser_activations(config, layout, chunk) // 2 + pending)


def model_bytes(layout: Layout) -> int:
    """Bytes of one generated model on disk (tensor data + a header allowance)."""
    size = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2, "int16": 2}
    return sum(t.numel * size.get(t.dtype, 1) for t in layout.tensors) + 128 * len(layout.tensors) + 4096
