"""The Python API (rpgen.train / generate / evaluate / load_run): the CLI's functions, called directly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import rpgen
from conftest import TINY, rpgen as cli


def test_train_generate_sample_through_the_api(digits_zoo, tmp_path):
    run = rpgen.train(digits_zoo, tmp_path / "run", overrides=TINY, progress=False)
    assert (run / "generator.safetensors").is_file()
    paths = rpgen.generate(run, tmp_path / "gen", num=2, seed=3, progress=False)
    models = rpgen.load_run(run).sample(2, seed=3)
    assert len(paths) == len(models) == 2
    for path, model in zip(paths, models):
        on_disk = load_file(path)
        assert on_disk.keys() == model.keys() and all(torch.equal(on_disk[k], model[k]) for k in model)
    picked = rpgen.load_run(run).sample(2, seed=0, states=[4, 4], sampler="ddpm", steps=3)
    assert not torch.equal(picked[0]["fc.weight"], picked[1]["fc.weight"])  # same state, new noise


def test_collect_returns_the_folder_train_takes(tmp_path):
    zoo = rpgen.collect("digits", tmp_path / "zoo", num=2, progress=False)
    assert zoo == tmp_path / "zoo" and len(list(zoo.glob("*.safetensors"))) == 2


def test_api_errors_are_rpgen_errors(digits_zoo, tmp_path):
    with pytest.raises(rpgen.RpgenError, match="nope.toml"):
        rpgen.train(digits_zoo, tmp_path / "run", config=tmp_path / "nope.toml")
    with pytest.raises(rpgen.RpgenError, match="train.stepz"):
        rpgen.train(digits_zoo, tmp_path / "run", overrides=["train.stepz=3"])
    with pytest.raises(rpgen.RpgenError, match="not an rpgen run"):
        rpgen.load_run(tmp_path)
    assert not (tmp_path / "run").exists()
    with pytest.raises(AttributeError):
        rpgen.no_such_function  # noqa: B018


def test_version():
    result = cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"rpgen {rpgen.__version__}"


class Listings:
    """Counts the directory listings of chosen folders (``os.listdir`` and ``os.scandir``, which every
    listing in Python goes through: ``Path.iterdir``, ``glob``, ``shutil``)."""

    def __init__(self, monkeypatch, *folders):
        import os

        self.watched = {str(f.resolve()): 0 for f in folders}
        for name in ("listdir", "scandir"):
            real = getattr(os, name)

            def counting(path=".", _real=real):
                key = os.path.realpath(path) if isinstance(path, (str, os.PathLike)) else None
                if key in self.watched:
                    self.watched[key] += 1
                return _real(path)

            monkeypatch.setattr(os, name, counting)

    def take(self, folder) -> int:
        """Listings of ``folder`` since the last call."""
        key = str(folder.resolve())
        count, self.watched[key] = self.watched[key], 0
        return count


def test_the_checkpoint_folder_is_listed_once_per_command(two_run_zoo, tmp_path, monkeypatch):
    zoo = two_run_zoo[0]
    listings = Listings(monkeypatch, zoo, tmp_path / "aligned" / "aligned")
    rpgen.train(zoo, tmp_path / "run", overrides=TINY, progress=False)
    assert listings.take(zoo) == 1
    rpgen.generate(tmp_path / "run", tmp_path / "gen", num=2, progress=False)
    assert listings.take(zoo) == 0  # generation reads the run directory only
    rpgen.evaluate(tmp_path / "run", tmp_path / "gen", "rpgen.zoo.digits:evaluate", baselines=False, progress=False)
    assert listings.take(zoo) == 1
    aligning = [*TINY, "data.align=weight-matching", 'data.align_model="rpgen.zoo.digits:DigitsCNN"']
    rpgen.train(zoo, tmp_path / "aligned", overrides=aligning, progress=False)
    assert listings.take(zoo) == 1 and listings.take(tmp_path / "aligned" / "aligned") == 1
