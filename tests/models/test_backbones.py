"""Backbones: settings reaching the mixers, the auto width, and layers recomputed in segments."""

from __future__ import annotations

import pytest
import torch

from rpgen.config import Config, ModelConfig, apply_overrides
from rpgen.errors import RpgenError
from conftest import saved_bytes

# The parameter names of mamba_ssm.Mamba (v2.x, mamba_simple.py), which the CUDA path uses.
MAMBA_SSM_NAMES = {"A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                   "dt_proj.weight", "dt_proj.bias", "out_proj.weight"}


def test_scan_settings_are_checked_and_reach_the_backbone():
    with pytest.raises(RpgenError, match="model.scan_chunk = 0 must be an integer >= 1"):
        ModelConfig(scan_chunk=0)
    with pytest.raises(RpgenError, match="model.scan"):
        apply_overrides(Config(), ["model.scan=fast"])
    from rpgen.models.backbones import build_backbone

    cfg = apply_overrides(Config(), ["model.scan=loop", "model.scan_chunk=7", "model.mamba_impl=torch",
                                     "model.d_model=16"]).model
    mixer = build_backbone(cfg, seq_len=10).layers[0].mixer
    assert (mixer.scan, mixer.scan_chunk) == ("loop", 7)


def test_an_auto_width_must_be_sized_before_a_backbone_is_built():
    from rpgen.models.backbones import build_backbone

    with pytest.raises(RpgenError, match="model.d_model = 0 .auto. is sized from a zoo"):
        build_backbone(ModelConfig(mamba_impl="torch"), seq_len=10)


def test_recomputed_layers_give_the_same_outputs_and_gradients_and_keep_less():
    from rpgen.models.backbones import build_backbone, mamba_recomputes

    hidden = torch.randn(2, 40, 16)
    results = []
    for recompute in ("off", "on"):
        torch.manual_seed(0)
        cfg = ModelConfig(d_model=16, d_state=4, mamba_impl="torch", recompute=recompute)
        model = build_backbone(cfg, seq_len=40)
        kept = saved_bytes(model, [hidden])
        model(hidden).square().mean().backward()
        results.append((model(hidden).detach(), {k: p.grad for k, p in model.named_parameters()}, kept))
    (y_off, g_off, kept_off), (y_on, g_on, kept_on) = results
    torch.testing.assert_close(y_on, y_off, rtol=0, atol=0)
    for k in g_off:
        torch.testing.assert_close(g_on[k], g_off[k], rtol=1e-6, atol=1e-7, msg=k)
    assert kept_on < kept_off / 3
    auto = ModelConfig(d_model=64)
    assert not mamba_recomputes(auto, batch=8, length=1_000) and mamba_recomputes(auto, batch=8, length=50_000)


MAMBA1 = {"scan_chunk": 4}
MAMBA2 = {"backbone": "mamba2", "headdim": 8, "ssd_chunk": 8}


@pytest.mark.parametrize("fields, length, segment", [(MAMBA1, 50, 8), (MAMBA1, 50, 13), (MAMBA1, 50, 64),
                                                     (MAMBA2, 70, 16), (MAMBA2, 70, 24), (MAMBA2, 70, 64)])
def test_layers_recomputed_in_segments_match_whole_layers(fields, length, segment):
    from rpgen.models.backbones import MambaBackbone

    hidden = torch.randn(3, length, 16)
    results = []
    for recompute in ("off", "on"):
        torch.manual_seed(0)
        cfg = ModelConfig(d_model=16, d_state=4, mamba_impl="torch", recompute=recompute, **fields)
        model = MambaBackbone(cfg, segment=segment)
        y = model(hidden)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), {k: p.grad for k, p in model.named_parameters()}))
    (y_off, g_off), (y_on, g_on) = results
    torch.testing.assert_close(y_on, y_off, rtol=1e-5, atol=1e-6)
    for k in g_off:
        torch.testing.assert_close(g_on[k], g_off[k], rtol=1e-4, atol=1e-6, msg=k)


def test_recompute_segments_are_whole_scan_chunks_of_bounded_size():
    from rpgen.models.backbones import MAMBA_ACTIVATIONS_PER_TOKEN, SEGMENT_BYTES, recompute_segment

    for batch, d_model, chunk in [(8, 64, 32), (1, 64, 32), (8, 256, 7), (64, 1024, 32)]:
        cfg = ModelConfig(d_model=d_model, scan_chunk=chunk)
        tokens = recompute_segment(cfg, batch=batch)
        assert tokens % chunk == 0
        kept = batch * tokens * cfg.expand * d_model * MAMBA_ACTIVATIONS_PER_TOKEN * 4
        assert kept <= SEGMENT_BYTES or tokens == chunk


