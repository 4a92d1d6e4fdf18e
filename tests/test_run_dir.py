"""The run directory: what a run start writes, read back file by file, and the checkpoints it names."""

from __future__ import annotations

import json

import pytest

from rpgen.config import Config
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.errors import RpgenError
from rpgen.run_dir import COPIED, RUN_INFO, TOKENIZER, RunDir, start_run_dir


@pytest.fixture
def run(digits_zoo, tmp_path):
    checkpoints = CheckpointSet.open(digits_zoo)
    config = Config().replace("data", checkpoint_dir=str(digits_zoo))
    start_run_dir(tmp_path / "run", config, checkpoints.layout(16), checkpoints, overwrite=False)
    return RunDir(tmp_path / "run")


def test_a_started_run_reads_back(run, digits_zoo):
    assert run.config().data.checkpoint_dir == str(digits_zoo)
    layout = run.layout()
    assert layout.token_size == 16 and run.info()["num_states"] == 5
    assert set(run.copied(layout)) == {t.name for t in layout.tensors if not t.generated}
    assert run.conditions(["0000.safetensors"]) is None
    assert run.training_checkpoints().paths == CheckpointSet.open(digits_zoo).paths
    run.require(TOKENIZER, RUN_INFO, COPIED)


def test_relative_checkpoint_folders_and_broken_files(run, tmp_path):
    toml = run.path / "config.toml"
    (run.path / "zoo").mkdir()
    toml.write_text(toml.read_text().replace(f'checkpoint_dir = "{run.config().data.checkpoint_dir}"',
                                             'checkpoint_dir = "zoo"'))
    assert run.checkpoint_folder() == run.path / "zoo"  # not in the working directory: from the run
    (run.path / TOKENIZER).write_text("{")
    with pytest.raises(RpgenError, match="tokenizer.json: not a valid tokenizer file"):
        run.layout()
    (run.path / RUN_INFO).write_text(json.dumps({"num_states": 0}))
    with pytest.raises(RpgenError, match="num_states .* must be a positive integer"):
        run.info()
    (run.path / COPIED).unlink()
    with pytest.raises(RpgenError, match="incomplete run directory"):
        run.require(TOKENIZER, COPIED)
    with pytest.raises(RpgenError, match="not an rpgen run directory"):
        RunDir(tmp_path / "nothing").checkpoint_folder()
