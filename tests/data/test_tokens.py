"""Lazy checkpoints and token sources: the scalable path gives exactly what the in-RAM path gives."""

import shutil

import pytest
import torch
from safetensors.torch import load_file
from conftest import TINY

from rpgen.config import Config, apply_overrides
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.tokenizer import fit_layout, tokenize
from rpgen.data.tokens import InMemoryTokens, LazyTokens
from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import load_state_dict


def test_lazy_checkpoints_fit_the_same_layout(digits_zoo):
    checkpoints = CheckpointSet.open(digits_zoo)
    state_dicts = [load_state_dict(p) for p in checkpoints.paths]
    lazy = checkpoints.checkpoints
    assert [list(c) for c in lazy] == [list(sd) for sd in state_dicts]
    for token_size in (7, 64):
        assert fit_layout(lazy, token_size=token_size) == fit_layout(state_dicts, token_size=token_size)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("center", ["tensor", "element"])
def test_lazy_and_in_memory_tokens_are_identical(digits_zoo, tmp_path, suffix, make_state_dict, center):
    if suffix == ".pt":
        for i in range(3):
            torch.save(make_state_dict(i), tmp_path / f"{i}.pt")
        folder = tmp_path
    else:
        folder = digits_zoo
    ckpts = CheckpointSet.open(folder).checkpoints
    layout = fit_layout(ckpts, token_size=5, center=center)
    lazy, ram = LazyTokens(ckpts, layout), InMemoryTokens(ckpts, layout)
    states = torch.tensor([1, 0, 1])
    rows = torch.randperm(3 * layout.num_tokens, generator=torch.Generator().manual_seed(0))[:40]
    a, b = lazy.gather(states, rows), ram.gather(states, rows)
    assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))
    full = tokenize(dict(ckpts[1].items()), layout)
    assert torch.equal(torch.nan_to_num(lazy.gather(torch.tensor([1]), torch.arange(layout.num_tokens)), nan=7.0),
                       torch.nan_to_num(full, nan=7.0))


def test_training_from_disk_equals_training_in_memory(digits_zoo, tmp_path):
    from rpgen.training import train

    config = apply_overrides(Config(), TINY)
    train(digits_zoo, tmp_path / "ram", config, progress=False)
    train(digits_zoo, tmp_path / "disk", config.replace("data", tokens_in_memory_mb=0), progress=False)
    a = load_file(tmp_path / "ram" / "generator.safetensors")
    b = load_file(tmp_path / "disk" / "generator.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_in_a_lazily_read_checkpoint_names_file_and_key(digits_zoo, tmp_path):
    from safetensors.torch import save_file

    folder = shutil.copytree(digits_zoo, tmp_path / "zoo")
    sd = load_file(folder / "0002.safetensors")
    sd["conv1.weight"][0, 0, 0, 0] = float("inf")
    save_file(sd, folder / "0002.safetensors")
    with pytest.raises(RpgenError, match=r"0002\.safetensors: key 'conv1\.weight' contains Inf"):
        fit_layout(CheckpointSet.open(folder).checkpoints, token_size=16)
