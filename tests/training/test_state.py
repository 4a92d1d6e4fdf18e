"""What --resume needs: the resumable state on disk, and which config changes a resumed run accepts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from rpgen.config import Config, apply_overrides
from rpgen.errors import RpgenError
from rpgen.run_dir import STATE
from rpgen.training import train
from rpgen.training.state import resumed_config, saved_config, state_path


@pytest.fixture(scope="module")
def runs(digits_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    train(digits_zoo, root / "unfinished", apply_overrides(Config(), TINY), progress=False, stop_after=6)
    return root


def test_state_path_prefers_the_complete_state(runs):
    run = runs / "unfinished"
    assert state_path(run) == run / STATE
    (run / STATE / "optimizer.pt").rename(run / "optimizer.pt.moved")  # a state missing a file is not used
    try:
        assert state_path(run) is None
    finally:
        (run / "optimizer.pt.moved").rename(run / STATE / "optimizer.pt")


def test_a_resumed_run_keeps_its_config_but_train(runs, tmp_path):
    saved = saved_config(runs / "unfinished")
    assert saved.model.d_model == 32 and saved.data.checkpoint_dir  # filled when the run started
    asked = apply_overrides(Config(), [*TINY, "train.steps=20"])  # d_model etc. given again, checkpoint_dir not
    assert resumed_config(saved, asked, run_dir=runs / "unfinished").train.steps == 20
    with pytest.raises(RpgenError, match="--resume cannot change model.num_heads"):
        resumed_config(saved, asked.replace("model", num_heads=8), run_dir=runs / "unfinished")
    (tmp_path / "config.toml").write_text("")  # a run directory without a saved state
    with pytest.raises(RpgenError, match="no saved training state yet"):
        saved_config(tmp_path)


def test_a_crash_between_the_state_renames_still_resumes(digits_zoo, tmp_path):
    config = apply_overrides(Config(), TINY)
    train(digits_zoo, tmp_path / "full", config, progress=False)
    run = tmp_path / "split"
    train(digits_zoo, run, config, progress=False, stop_after=10)  # saved at step 5, then at step 10
    (run / "state").rename(run / "state.old")  # as if killed after the first rename of the save
    train(digits_zoo, run, None, resume=True, progress=False)
    full, split = load_file(tmp_path / "full" / "generator.safetensors"), load_file(run / "generator.safetensors")
    assert all(torch.equal(full[k], split[k]) for k in full)
