"""RAM estimates of the token-wise methods follow the settings that change the big buffers."""

from __future__ import annotations


def test_training_estimate_follows_the_scan_and_recompute():
    import torch

    from rpgen.config import apply_overrides, preset
    from rpgen.methods.memory import training_memory
    from rpgen.data.tokenizer import fit_layout

    sds = [{"w": torch.randn(64 * 20_000, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    layout = fit_layout(sds, token_size=64)  # 20,000 tokens, batch 8: the loop holds 8 x 20K x 128 x 16 floats

    def estimate(*overrides: str) -> float:
        config = apply_overrides(preset("quickstart"), ["model.backbone=mamba", *overrides])  # Mamba-1's scan
        return training_memory(config, layout, num_checkpoints=8, in_memory=True) / 1e9

    loop, chunked = estimate("model.scan=loop"), estimate("model.recompute=off")
    recomputed = estimate("model.recompute=on")
    assert loop > 3 * chunked and chunked > 1.8 * recomputed  # the fixed costs are the same in all three
    assert estimate() == recomputed  # auto: these activations pass 1 GiB
