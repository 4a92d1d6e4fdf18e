"""A real two-run digits folder aligned on disk, and ``rpgen train --align`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from traced_models import run

from rpgen.align import align_checkpoints, interpolate, save_spec, spec_from_model, weight_distance
from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import save_state_dict
from rpgen.zoo.digits import DigitsCNN, collect_digits, load_split


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Two independently trained DigitsCNN (seeds 0 and 1): ``r00_0000`` and ``r01_0000.safetensors``."""
    out = tmp_path_factory.mktemp("align") / "runs"
    collect_digits(out, num_checkpoints=2, runs=2, seed=0, progress=False)
    return out


def test_align_checkpoints_keeps_the_function_and_moves_closer(two_runs, tmp_path):
    spec = spec_from_model(DigitsCNN())
    summary = align_checkpoints(two_runs, tmp_path / "aligned", spec, progress=False)
    names = ["r00_0000.safetensors", "r01_0000.safetensors"]
    assert sorted(p.name for p in (tmp_path / "aligned").iterdir()) == [".rpgen", "align.json", *names]
    assert summary["reference"] == names[0]
    assert json.loads((tmp_path / "aligned" / "align.json").read_text()) == summary
    before, after = summary["distance_before"][names[1]], summary["distance_after"][names[1]]
    assert after < before, summary
    assert summary["distance_after"][names[0]] == 0.0

    reference, aligned_reference = load_file(two_runs / names[0]), load_file(tmp_path / "aligned" / names[0])
    assert all(torch.equal(reference[k], aligned_reference[k]) for k in reference)  # bit-identical
    other, aligned = load_file(two_runs / names[1]), load_file(tmp_path / "aligned" / names[1])
    x_test = load_split()[2]
    assert torch.allclose(run(DigitsCNN, aligned, x_test), run(DigitsCNN, other, x_test), atol=1e-5)
    assert weight_distance(aligned, reference) == pytest.approx(after)
    assert interpolate(reference, aligned, 0.0).keys() == reference.keys()


def test_align_checkpoints_with_a_spec_file_and_a_named_reference(two_runs, tmp_path):
    save_spec(spec_from_model(DigitsCNN()), tmp_path / "spec.json")
    summary = align_checkpoints(two_runs, tmp_path / "aligned", tmp_path / "spec.json",
                                reference="r01_0000.safetensors", progress=False)
    assert summary["distance_after"]["r00_0000.safetensors"] < summary["distance_before"]["r00_0000.safetensors"]
    with pytest.raises(RpgenError, match="already exists"):
        align_checkpoints(two_runs, tmp_path / "aligned", tmp_path / "spec.json", progress=False)
    align_checkpoints(two_runs, tmp_path / "aligned", tmp_path / "spec.json", overwrite=True, progress=False)
    with pytest.raises(RpgenError, match="reference 'nope.safetensors' is not a checkpoint"):
        align_checkpoints(two_runs, tmp_path / "other", tmp_path / "spec.json", reference="nope.safetensors")


def test_align_checkpoints_refuses_adapter_folders(tmp_path):
    for i in range(2):
        folder = tmp_path / "adapters" / f"a{i}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        save_state_dict({"lora_A.weight": torch.zeros(2, 4)}, folder / "adapter_model.safetensors")
    with pytest.raises(RpgenError, match="a0: align_checkpoints reads checkpoint files") as exc:
        align_checkpoints(tmp_path / "adapters", tmp_path / "out", spec_from_model(DigitsCNN()), progress=False)
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_train_aligns_the_zoo_into_the_run_and_evaluates_against_it(two_run_zoo, tmp_path):
    from conftest import check_one_line_error, rpgen, set_args, tiny
    from rpgen.zoo.digits import evaluate as digits_evaluate

    zoo, run = two_run_zoo[0], tmp_path / "run"
    result = rpgen("train", zoo, "--out", run, "--no-progress", "--align", "weight-matching",
                   "--model", "rpgen.zoo.digits:DigitsCNN", *set_args(tiny("train.steps=3")))
    assert result.exit_code == 0, result.output
    aligned = sorted((run / "aligned").glob("*.safetensors"))
    originals = sorted(zoo.glob("*.safetensors"))
    assert [p.name for p in aligned] == [p.name for p in originals]
    for a, o in zip(aligned, originals):  # same functions, and the second run moved
        assert digits_evaluate(load_file(a))["accuracy"] == digits_evaluate(load_file(o))["accuracy"]
    assert not torch.equal(load_file(aligned[-1])["conv1.weight"], load_file(originals[-1])["conv1.weight"])
    assert torch.equal(load_file(aligned[0])["conv1.weight"], load_file(originals[0])["conv1.weight"])
    assert f'checkpoint_dir = "{(run / "aligned").resolve()}"' in (run / "config.toml").read_text()
    result = rpgen("generate", run, "--num", 2, "--out", tmp_path / "gen", "--no-progress")
    assert result.exit_code == 0, result.output
    result = rpgen("evaluate", run, "--generated", tmp_path / "gen", "--evaluator", "rpgen.zoo.digits:evaluate",
                   "--no-baselines", "--no-progress")
    assert result.exit_code == 0, result.output
    files = json.loads((tmp_path / "gen" / "results.json").read_text())["checkpoint_files"]
    assert all(str(run / "aligned") in f for f in files)

    for args, needle in ((["--align", "weight-matching"], "needs one of data.align_model"),
                         (["--align", "weight-matching", "--model", "rpgen.zoo.digits:load_split"],
                          "model factory 'rpgen.zoo.digits:load_split' returned a tuple"),
                         (["--align", "weight-matching", "--model", "torch.nn:Identity"], "the checkpoint has key")):
        out = tmp_path / f"bad{len(args)}{needle[:3]}"
        check_one_line_error(rpgen("train", zoo, "--out", out, "--no-progress", *args, *set_args(tiny())), needle)
        assert not out.exists()


def test_checkpoints_of_one_run_share_one_permutation(two_run_zoo, tmp_path):
    zoo = two_run_zoo[0]  # r00_0000, r00_0001, r01_0000, r01_0001
    originals = [load_file(p) for p in sorted(zoo.glob("*.safetensors"))]
    align_checkpoints(zoo, tmp_path / "a", spec_from_model(DigitsCNN()), lineage=[0, 0, 1, 1], progress=False)
    aligned = [load_file(p) for p in sorted((tmp_path / "a").glob("*.safetensors"))]
    for a, b in ((0, 1), (2, 3)):  # one permutation per run keeps the distance between its epochs
        assert weight_distance(aligned[a], aligned[b]) == pytest.approx(weight_distance(originals[a], originals[b]))
    assert all(torch.equal(aligned[1][k], originals[1][k]) for k in originals[1])  # the reference's run stays
    assert weight_distance(aligned[2], aligned[0]) < weight_distance(originals[2], originals[0])
