"""The no-diffusion ablation (model.method = "mse"): backbone + linear head, one model per state."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from conftest import rpgen, train_and_generate

MSE = ["model.method=mse", "model.backbone=lstm", "model.d_model=16", "model.num_layers=1", "data.token_size=32",
       "train.steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.log_every=2"]


def test_mse_head_generates_one_model_per_state(digits_zoo, tmp_path):
    run, _ = train_and_generate(digits_zoo, tmp_path, MSE)
    config = (run / "config.toml").read_text()
    assert 'method = "mse"' in config
    assert not any("denoiser.layers" in k for k in load_file(run / "generator.safetensors"))
    gen = tmp_path / "states"
    assert rpgen("generate", run, "--num", 2, "--out", gen, "--state", 1, "--state", 1, "--no-progress").exit_code == 0
    a, b = load_file(gen / "0000.safetensors"), load_file(gen / "0001.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # no sampler: a state gives one model
