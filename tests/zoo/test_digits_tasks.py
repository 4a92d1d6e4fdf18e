"""The digits-tasks zoo (conditional): real heads on a shared frozen extractor, resumable collect."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.formats.checkpoints import load_state_dict
from rpgen.data.conditions import read_conditions
from rpgen.errors import RpgenError
from rpgen.zoo import digits_tasks as zoo

CODES = ["1000000000", "0100000000", "1100000000", "0011000000", "1111100000", "0101010101",
         "0000000010", "0110000010"]  # as conftest.TASKS_ZOO_CODES; the last two are held-out tasks
SEEN = CODES[:6]


def test_codes_and_heldout():
    codes = zoo.all_codes()
    assert len(codes) == 1022 == len(set(codes))
    assert "0000000000" not in codes and "1111111111" not in codes
    assert codes[0] == "1000000000"  # int(b) = 1: only class 0 is positive
    assert len(zoo.HELDOUT) >= 20 and set(zoo.HELDOUT) <= set(codes)
    for bad in ["01", "01010101012", "01x1010101", "0000000000", "1111111111"]:
        with pytest.raises(RpgenError, match=repr(bad)):
            zoo.check_code(bad)


def test_zoo_layout_and_conditions(tasks_zoo):
    paths = CheckpointSet.open(tasks_zoo / "train").paths
    state_dicts = [load_state_dict(p) for p in paths]
    assert [p.name for p in paths] == sorted(f"{c}_{k}.safetensors" for c in SEEN for k in range(2))
    for sd in state_dicts:
        zoo.TaskHead().load_state_dict(sd, strict=True)
    assert sum(v.numel() for v in state_dicts[0].values()) == 2242
    conditions = read_conditions(tasks_zoo / "train", [p.name for p in paths])
    assert conditions.tolist()[0] == zoo.code_bits(paths[0].name[:10])
    assert sorted(p.name for p in (tasks_zoo / "heldout").glob("*.safetensors")) == [
        "0000000010_0.safetensors", "0000000010_1.safetensors", "0110000010_0.safetensors", "0110000010_1.safetensors"]
    assert [p.name for p in tasks_zoo.glob("*.safetensors")] == ["extractor.safetensors"]
    with safe_open(str(paths[0]), framework="pt") as f:
        assert f.metadata()["task"] == paths[0].name[:10]


def test_heads_learn_their_task_and_the_evaluator_agrees(tasks_zoo):
    manifest = zoo.load_manifest(tasks_zoo)
    assert set(manifest["tasks"]) == set(CODES)
    for code, info in manifest["tasks"].items():
        assert all(a > 94.0 for a in info["accuracy"]), (code, info)
        assert info["chance"] == pytest.approx(zoo.chance_rate(code))
        evaluate = zoo.make_evaluator(code, zoo_dir=tasks_zoo)
        split = info["split"]
        assert evaluate(load_file(tasks_zoo / split / f"{code}_1.safetensors"))["accuracy"] == pytest.approx(
            info["accuracy"][1])
    # a head answers its own task, not another one
    head = load_file(tasks_zoo / "train" / "1000000000_0.safetensors")
    assert zoo.make_evaluator("0100000000", zoo_dir=tasks_zoo)(head)["accuracy"] < 85.0
    assert manifest["tasks"]["1000000000"]["chance"] == pytest.approx(90.0, abs=0.5)


def test_heads_do_not_depend_on_the_other_tasks(tasks_zoo):
    from rpgen.formats.checkpoints import load_state_dict
    from rpgen.zoo.digits import load_split

    x_train, y_train, _, _ = load_split()
    features = zoo.extract_features(load_state_dict(tasks_zoo / "extractor.safetensors"), x_train)
    (alone,) = zoo.train_heads(["1100000000"], features, y_train, seed=0, num_checkpoints=2)
    in_zoo = load_file(tasks_zoo / "train" / "1100000000_1.safetensors")
    for key in in_zoo:
        torch.testing.assert_close(alone[1][key], in_zoo[key], rtol=1e-4, atol=1e-5)


def test_interrupted_collect_resumes(tasks_zoo, tmp_path):
    out = tmp_path / "zoo"
    shutil.copytree(tasks_zoo, out)
    for name in ("zoo.json", "train/conditions.json", "train/0011000000_1.safetensors"):
        (out / name).unlink()
    zoo.collect_digits_tasks(out, num_checkpoints=2, codes=CODES, progress=False)
    assert (out / "zoo.json").is_file() and (out / "train" / "conditions.json").is_file()
    again = load_file(out / "train" / "0011000000_1.safetensors")
    first = load_file(tasks_zoo / "train" / "0011000000_1.safetensors")
    assert all(torch.equal(again[k], first[k]) for k in first)
    tasks = [json.loads((folder / "zoo.json").read_text())["tasks"] for folder in (out, tasks_zoo)]
    assert tasks[0] == tasks[1]


def test_collect_refuses_complete_or_foreign_folders(tasks_zoo, tmp_path):
    with pytest.raises(RpgenError, match="complete zoo"):
        zoo.collect_digits_tasks(tasks_zoo, num_checkpoints=2, codes=CODES, progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(tasks_zoo, partial)
    (partial / "zoo.json").unlink()
    with pytest.raises(RpgenError, match="other settings"):
        zoo.collect_digits_tasks(partial, num_checkpoints=3, codes=CODES, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RpgenError, match="not a digits-tasks zoo"):
        zoo.collect_digits_tasks(foreign, codes=CODES, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(RpgenError, match="no extractor.safetensors"):
        zoo.make_evaluator("1000000000", zoo_dir=foreign)


@pytest.mark.slow
def test_full_collect_via_cli(tmp_path):
    from typer.testing import CliRunner

    from rpgen.cli import app

    result = CliRunner().invoke(app, ["collect", "digits-tasks", "--out", str(tmp_path / "z"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "z" / "train").glob("*.safetensors"))) == 3 * (1022 - len(zoo.HELDOUT))
    assert len(list((tmp_path / "z" / "heldout").glob("*.safetensors"))) == 3 * len(zoo.HELDOUT)
    tasks = zoo.load_manifest(tmp_path / "z")["tasks"]
    assert len(tasks) == 1022
    assert sum(sum(t["accuracy"]) / 3 for t in tasks.values()) / 1022 > 97.0
