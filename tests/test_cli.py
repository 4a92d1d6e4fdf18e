"""The CLI end to end on a real (tiny) digits zoo: train -> generate -> evaluate, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import rpgen, set_args
from conftest import check_one_line_error as one_line_error
from rpgen.zoo.digits import DigitsCNN


@pytest.fixture(scope="module")
def trained(digits_zoo, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args())
    assert result.exit_code == 0, result.output
    return run


def test_train_writes_a_complete_run(trained, digits_zoo):
    names = {p.name for p in trained.iterdir()}
    assert {"config.toml", "tokenizer.json", "copied.safetensors", "metrics.jsonl", "state",
            "generator.safetensors", "run.json", "loss.png"} <= names
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (trained / "config.toml").read_text()
    assert 'backbone = "lstm"' in config and str(digits_zoo.resolve()) in config
    steps = [json.loads(line)["step"] for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 12]
    assert "bn1.num_batches_tracked" in load_file(trained / "copied.safetensors")


def test_generate_then_evaluate(trained, tmp_path):
    gen = tmp_path / "gen"
    result = rpgen("generate", trained, "--num", 3, "--out", gen, "--seed", 1, "--no-progress")
    assert result.exit_code == 0, result.output
    files = sorted(gen.glob("*.safetensors"))
    assert [f.name for f in files] == ["0000.safetensors", "0001.safetensors", "0002.safetensors"]
    model = DigitsCNN()
    model.load_state_dict(load_file(files[0]))  # strict: every key, shape and dtype
    assert model.bn1.num_batches_tracked.dtype == torch.int64
    result = rpgen("evaluate", trained, "--generated", gen, "--evaluator", "rpgen.zoo.digits:evaluate", "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())
    assert results["metric"] == "accuracy"
    assert len(results["checkpoints"]) == 5 and len(results["generated"]) == 3
    assert (gen / "report.md").is_file()
    assert "generated" in result.output


def test_generate_is_reproducible(trained, tmp_path):
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        assert rpgen("generate", trained, "--num", 2, "--out", tmp_path / name, "--seed", seed,
                     "--sampler", "ddpm", "--steps", 5, "--no-progress").exit_code == 0
    a, b, c = (load_file(tmp_path / n / "0001.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_samplers_and_states(trained, tmp_path, sampler):
    out = tmp_path / sampler
    result = rpgen("generate", trained, "--num", 2, "--out", out, "--sampler", sampler, "--steps", 3,
                   "--state", 0, "--state", 4, "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "generation.json").read_text())["permutation_states"] == [0, 4]
    result = rpgen("generate", trained, "--num", 1, "--out", tmp_path / "cold", "--sampler", sampler, "--steps", 3,
                   "--temperature", 0.5, "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cold" / "generation.json").read_text())["temperature"] == 0.5


def test_generate_refuses_a_temperature_ddpm_cannot_use(trained, tmp_path):
    one_line_error(rpgen("generate", trained, "--num", 1, "--out", tmp_path / "g", "--sampler", "ddpm",
                         "--temperature", 0.5), "--temperature 0.5", "ddim or dpm")
    assert not (tmp_path / "g").exists()


# ---- bad input: one line naming the culprit, exit status 1, nothing half-written ----


def copy_zoo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_train_rejects_bad_folders(digits_zoo, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(rpgen("train", empty, "--out", tmp_path / "r1"), str(empty))
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(digits_zoo / "0000.safetensors", one)
    one_line_error(rpgen("train", one, "--out", tmp_path / "r2"), "at least 2")
    bad = copy_zoo(digits_zoo, tmp_path / "nan")
    sd = load_file(bad / "0003.safetensors")
    sd["fc.bias"][0] = float("nan")
    save_file(sd, bad / "0003.safetensors")
    one_line_error(rpgen("train", bad, "--out", tmp_path / "r3"), "0003.safetensors", "fc.bias")
    trunc = copy_zoo(digits_zoo, tmp_path / "trunc")
    data = (trunc / "0002.safetensors").read_bytes()
    (trunc / "0002.safetensors").write_bytes(data[: len(data) // 2])
    one_line_error(rpgen("train", trunc, "--out", tmp_path / "r4"), "0002.safetensors")
    shapes = copy_zoo(digits_zoo, tmp_path / "shapes")
    sd = load_file(shapes / "0001.safetensors")
    sd["fc.weight"] = torch.zeros(10, 31)
    save_file(sd, shapes / "0001.safetensors")
    one_line_error(rpgen("train", shapes, "--out", tmp_path / "r5"), "0001.safetensors", "fc.weight")
    for i in range(1, 6):
        assert not (tmp_path / f"r{i}").exists(), "a failed run must not leave a run directory"


def test_train_rejects_bad_config(digits_zoo, tmp_path):
    one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "r", "--set", "train.stepz=3"), "train.stepz")
    one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "r", "--set", "train.steps=many"), "train.steps")
    one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "r", "--config", tmp_path / "nope.toml"), "nope.toml")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nbackbone = 'rnn'\n")
    one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "r", "--config", cfg), "model.backbone")
    assert not (tmp_path / "r").exists()


def test_existing_output_is_refused_unless_overwrite(trained, digits_zoo, tmp_path):
    one_line_error(rpgen("train", digits_zoo, "--out", trained, *set_args()), "already exists", "--overwrite")
    out = tmp_path / "gen"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(rpgen("generate", trained, "--num", 1, "--out", out), "already exists")
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces only what rpgen wrote: a folder of the user's is kept
    one_line_error(rpgen("generate", trained, "--num", 1, "--out", out, "--overwrite"), out, "not written by rpgen")
    assert (out / "keep.txt").read_text() == "mine"
    g2 = tmp_path / "g2"
    assert rpgen("generate", trained, "--num", 1, "--out", g2, "--no-progress").exit_code == 0
    assert rpgen("generate", trained, "--num", 2, "--out", g2, "--overwrite", "--no-progress").exit_code == 0
    assert (tmp_path / "g2" / "0001.safetensors").is_file()


def test_generate_rejects_missing_run_and_bad_options(trained, tmp_path):
    one_line_error(rpgen("generate", tmp_path / "nothing", "--num", 1, "--out", tmp_path / "g"), "not an rpgen run")
    one_line_error(rpgen("generate", trained, "--num", 1, "--out", tmp_path / "g", "--state", 99), "99")
    one_line_error(rpgen("generate", trained, "--num", 1, "--out", tmp_path / "g", "--sampler", "euler"), "euler")
    one_line_error(rpgen("generate", trained, "--num", 0, "--out", tmp_path / "g"), "--num")
    assert not (tmp_path / "g").exists()


def test_evaluate_rejects_bad_evaluators(trained, tmp_path):
    gen = tmp_path / "gen"
    assert rpgen("generate", trained, "--num", 1, "--out", gen, "--no-progress").exit_code == 0
    raising = tmp_path / "raising.py"
    raising.write_text("def evaluate(sd):\n    raise ValueError('boom')\n")
    words = tmp_path / "words.py"
    words.write_text("def evaluate(sd):\n    return {'accuracy': 'high'}\n")
    cases = [("no_colon_here", "no_colon_here"), (f"{tmp_path}/missing.py:evaluate", "missing.py"),
             ("rpgen.zoo.digits:nope", "nope"), ("rpgen.zoo.digits:NAME", "NAME"),
             (f"{raising}:evaluate", "boom"), (f"{words}:evaluate", "accuracy")]
    for spec, needle in cases:
        one_line_error(rpgen("evaluate", trained, "--generated", gen, "--evaluator", spec, "--no-progress"), needle)
    assert not (gen / "results.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(rpgen("evaluate", trained, "--generated", empty, "--evaluator", "rpgen.zoo.digits:evaluate"),
                   str(empty))


def test_help_explains_every_command():
    result = rpgen("--help")
    assert result.exit_code == 0
    for command in ("collect", "train", "generate", "evaluate", "quickstart"):
        assert command in result.output
        sub = rpgen(command, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_collect_digits(tmp_path):
    result = rpgen("collect", "digits", "--out", tmp_path / "z", "--num", 3)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "z").glob("*.safetensors"))) == 3
    one_line_error(rpgen("collect", "cifar", "--out", tmp_path / "y"), "cifar")


def test_evaluate_without_baselines_prints_the_verdict(trained, tmp_path):
    gen = tmp_path / "gen"
    assert rpgen("generate", trained, "--num", 2, "--out", gen, "--no-progress").exit_code == 0
    result = rpgen("evaluate", trained, "--generated", gen, "--evaluator", "rpgen.zoo.digits:evaluate",
                   "--no-baselines", "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())
    assert results["baselines"] == {} and "Generated models are" in result.output
    assert " ".join(results["verdict"].split()[:4]) in " ".join(result.output.split())


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    result = rpgen("quickstart", "--out", out, "--num", 2, "--no-progress", *set_args())
    assert result.exit_code == 0, result.output
    assert len(list((out / "checkpoints").glob("*.safetensors"))) == 50
    report = (out / "report.md").read_text()
    assert "](generated/pca.png)" in report and (out / "generated" / "pca.png").is_file()
    assert "time: collect" in result.output and "Generated models are" in result.output


def test_collect_runs_only_for_digits(tmp_path):
    result = rpgen("collect", "digits-tasks", "--out", tmp_path / "z", "--runs", 2)
    assert result.exit_code == 1 and "--runs applies to the digits zoo only" in result.output
    assert not (tmp_path / "z").exists()
