"""Sequence backbones: token embeddings -> one prototype per token.

Glossary: ``b`` batch (checkpoints), ``l`` tokens, ``d`` d_model, ``e`` d_inner (expand * d).
Every backbone maps (b, l, d) -> (b, l, d).

The Mamba backbones stack pre-norm residual blocks around a mixer: Mamba-1
(:mod:`rpgen.models.mamba`) or Mamba-2 (:mod:`rpgen.models.mamba2`), each with the parameter
names of its ``mamba_ssm`` class, so a generator trained with the CUDA kernels loads into the
pure-PyTorch implementation and vice versa. Long sequences are recomputed in segments in
backward, carrying the conv tail and the state between segments.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rpgen.config import ModelConfig
from rpgen.errors import RpgenError
from rpgen.models.mamba import Mamba
from rpgen.models.mamba2 import Mamba2


def mamba_ssm_available() -> bool:
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # ImportError, or a CUDA/ABI error raised by the extension
        return False
    return True


class Residual(nn.Module):
    """Pre-norm residual block around a mixer: x + mixer(norm(x))."""

    def __init__(self, d_model: int, mixer: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))


MAMBA_ACTIVATIONS_PER_TOKEN = 12
"""(b, l, e) float32 tensors one pure-PyTorch Mamba layer keeps for backward (counted from its ops)."""
RECOMPUTE_ABOVE_BYTES = 2**28
"""``model.recompute = "auto"`` recomputes layers when their kept activations would pass this. Measured
(bench/results/peers.md sizes, quickstart preset, 300K parameters, 4,689 tokens, batch 8, shared 2 cores):
recomputing takes the training peak from 1.26 to 1.01 GB for a 19.2 s instead of 17.1 s step."""
SEGMENT_BYTES = 2**26
"""A recomputed layer runs in segments of tokens whose kept activations are about this many bytes:
only one segment's activations are alive in backward."""


def kept_floats_per_token(cfg: ModelConfig) -> int:
    """Float32 values one pure-PyTorch Mamba layer keeps for backward per token of one sequence.

    Mamba-1: :data:`MAMBA_ACTIVATIONS_PER_TOKEN` (b, l, e) tensors. Mamba-2: about 13 (b, l, e)
    tensors, 16 per state channel (B, C and their products), 3 values per head and token of a chunk
    (the decays of its tokens on each other) and two (e, n) states per chunk, from autograd's saved
    tensors at d_model 64-128, d_state 16-64, chunks of 32-64 (an upper bound within 15%,
    tests/models/test_mamba2.py)."""
    e = cfg.expand * cfg.d_model
    if cfg.backbone == "mamba2":
        n = cfg.d_state or 16
        return 13 * e + 16 * n + 3 * cfg.ssd_chunk * (e // cfg.headdim) + 2 * e * n // cfg.ssd_chunk
    return MAMBA_ACTIVATIONS_PER_TOKEN * e


def _kept_bytes_per_token(cfg: ModelConfig, *, batch: int) -> int:
    """Bytes of activations one Mamba layer keeps for backward per token of the sequence."""
    return batch * kept_floats_per_token(cfg) * 4


def _chunk_of(cfg: ModelConfig) -> int:
    """Tokens per chunk of the layer's scan (Mamba-1) or state space duality (Mamba-2)."""
    return cfg.ssd_chunk if cfg.backbone == "mamba2" else cfg.scan_chunk


def mamba_recomputes(cfg: ModelConfig, *, batch: int, length: int) -> bool:
    """Whether a training step of the pure-PyTorch Mamba backbone recomputes its layers in backward."""
    if cfg.recompute != "auto":
        return cfg.recompute == "on"
    return _kept_bytes_per_token(cfg, batch=batch) * length * cfg.num_layers > RECOMPUTE_ABOVE_BYTES


def recompute_segment(cfg: ModelConfig, *, batch: int) -> int:
    """Tokens per segment of a recomputed layer: a whole number of chunks, about ``SEGMENT_BYTES``
    of kept activations."""
    chunk = _chunk_of(cfg)
    return max(1, SEGMENT_BYTES // (_kept_bytes_per_token(cfg, batch=batch) * chunk)) * chunk


def _residual_segment(layer: Residual, x: Tensor, tail: Tensor | None,
                      h0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    out, tail, h = layer.mixer.segment(layer.norm(x), tail, h0)
    return x + out, tail, h


def recomputed_in_segments(layer: Residual, x: Tensor, tokens: int) -> Tensor:
    """``layer(x)`` for a Mamba or Mamba-2 :class:`Residual`, ``tokens`` tokens at a time: autograd keeps each
    segment's input and the conv tail and scan state between segments, and backward recomputes
    one segment at a time. (b, l, d) -> (b, l, d)."""
    tail = h = None
    outs = []
    for start in range(0, x.shape[1], tokens):
        out, tail, h = checkpoint(_residual_segment, layer, x[:, start:start + tokens], tail, h, use_reentrant=False)
        outs.append(out)
    return torch.cat(outs, dim=1)


class MambaBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig, *, use_cuda_kernels: bool = False, segment: int | None = None) -> None:
        """``segment``: tokens per recomputed segment (default :func:`recompute_segment`)."""
        super().__init__()
        self.cfg = cfg
        self.use_cuda_kernels = use_cuda_kernels
        self.segment = segment
        d_state = cfg.d_state or 16

        def mixer() -> nn.Module:
            if cfg.backbone == "mamba2":
                if use_cuda_kernels:
                    from mamba_ssm import Mamba2 as CudaMamba2

                    return CudaMamba2(cfg.d_model, d_state=d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                                      headdim=cfg.headdim, chunk_size=cfg.ssd_chunk)
                return Mamba2(cfg.d_model, d_state=d_state, d_conv=cfg.d_conv, expand=cfg.expand, headdim=cfg.headdim,
                              chunk=cfg.ssd_chunk)
            if use_cuda_kernels:
                from mamba_ssm import Mamba as CudaMamba

                return CudaMamba(cfg.d_model, d_state=d_state, d_conv=cfg.d_conv, expand=cfg.expand)
            return Mamba(cfg.d_model, d_state=d_state, d_conv=cfg.d_conv, expand=cfg.expand, scan=cfg.scan,
                         scan_chunk=cfg.scan_chunk)

        self.layers = nn.ModuleList(Residual(cfg.d_model, mixer()) for _ in range(cfg.num_layers))
        self.norm_f = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(b, l, d) -> (b, l, d)"""
        recompute = (torch.is_grad_enabled() and not self.use_cuda_kernels
                     and mamba_recomputes(self.cfg, batch=x.shape[0], length=x.shape[1]))
        for layer in self.layers:
            if not recompute:
                x = layer(x)
            elif self.cfg.backbone == "mamba2" or self.cfg.scan == "chunked":
                x = recomputed_in_segments(layer, x, self.segment or recompute_segment(self.cfg, batch=x.shape[0]))
            else:  # the loop scan runs whole sequences only
                x = checkpoint(layer, x, use_reentrant=False)
        return self.norm_f(x)


class LSTMBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(cfg.d_model, cfg.d_model, num_layers=cfg.num_layers, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.lstm(x)[0]


class TransformerBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.num_heads, 4 * cfg.d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.causal = cfg.causal

    def forward(self, x: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device) if self.causal else None
        return self.encoder(x, mask=mask, is_causal=self.causal)


class GatedMLP(nn.Module):
    """gMLP block (Liu et al. 2021): channel MLP with a spatial gating unit over the l tokens.

    The spatial projection is (l, l): memory grows with the square of the token count.
    """

    def __init__(self, d_model: int, seq_len: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.proj_in = nn.Linear(d_model, 4 * d_model)
        self.gate_norm = nn.LayerNorm(2 * d_model)
        self.spatial = nn.Linear(seq_len, seq_len)
        nn.init.zeros_(self.spatial.weight)
        nn.init.ones_(self.spatial.bias)
        self.proj_out = nn.Linear(2 * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(b, l, d) -> (b, l, d)"""
        u, v = F.gelu(self.proj_in(self.norm(x))).chunk(2, dim=-1)  # (b, l, 2d) each
        v = self.spatial(self.gate_norm(v).transpose(1, 2)).transpose(1, 2)
        return x + self.proj_out(u * v)


class GMLPBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig, *, seq_len: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(GatedMLP(cfg.d_model, seq_len) for _ in range(cfg.num_layers)))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TokenMLP(nn.Module):
    """No sequence model (ablation): each token's prototype from its own embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(cfg.num_layers):
            layers += [nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU()]
        self.mlp = nn.Sequential(*layers, nn.LayerNorm(cfg.d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def build_backbone(cfg: ModelConfig, *, seq_len: int) -> nn.Module:
    """The backbone named by ``cfg.backbone``; ``cfg.mamba_impl`` and ``cfg.d_model`` must already be
    resolved."""
    if cfg.d_model == 0:
        raise RpgenError("config model.d_model = 0 (auto) is sized from a zoo when training starts "
                         "(rpgen.sizing.resolve_sizing); give a width to build a model without one")
    if cfg.backbone in ("mamba", "mamba2"):
        return MambaBackbone(cfg, use_cuda_kernels=cfg.mamba_impl == "cuda")
    if cfg.backbone == "lstm":
        return LSTMBackbone(cfg)
    if cfg.backbone == "transformer":
        return TransformerBackbone(cfg)
    if cfg.backbone == "gmlp":
        return GMLPBackbone(cfg, seq_len=seq_len)
    return TokenMLP(cfg)
