"""evaluate_models / evaluate_run end to end: results.json, report.md, plots, baselines, novelty, IoU."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rpgen, set_args
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file

from rpgen.formats.checkpoints import load_state_dict, save_state_dict
from rpgen.formats.listing import list_checkpoints
from rpgen.errors import RpgenError
from rpgen.evaluation import EvaluationResult, evaluate_models, evaluate_run
from rpgen.evaluation.report import results_table
from rpgen.zoo.digits import evaluate as digits_evaluate


@pytest.fixture
def generated_dir(digits_zoo: Path, tmp_path: Path) -> Path:
    """Two 'generated' models: a copy of checkpoint 0 and checkpoint 4 with noise added."""
    out = tmp_path / "gen"
    out.mkdir()
    shutil.copy(digits_zoo / "0000.safetensors", out / "gen_0000.safetensors")
    noisy = load_state_dict(digits_zoo / "0004.safetensors")
    g = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in noisy.items()}
    save_state_dict(noisy, out / "gen_0001.safetensors")
    return out


# --- evaluate_models / evaluate_run ----------------------------------------------------------------


@pytest.fixture
def evaluated(digits_zoo, generated_dir) -> tuple[EvaluationResult, dict]:
    """The digits evaluator on the zoo and ``generated_dir``: the result and results.json as read back."""
    results = evaluate_models(list_checkpoints(digits_zoo), sorted(generated_dir.glob("*.safetensors")),
                              "rpgen.zoo.digits:evaluate", out_dir=generated_dir, progress=False)
    return results, json.loads((generated_dir / "results.json").read_text())


def test_evaluate_models_writes_results_and_report(digits_zoo, generated_dir, evaluated):
    checkpoints = list_checkpoints(digits_zoo)
    generated = sorted(generated_dir.glob("*.safetensors"))
    results, on_disk = evaluated
    assert isinstance(results, EvaluationResult) and on_disk == results.to_dict()
    assert list(on_disk) == ["metric", "higher_is_better", "evaluator", "checkpoints", "generated", "baselines",
                             "checkpoint_files", "generated_files", "checkpoint_metrics", "generated_metrics",
                             "novelty", "novelty_unit", "nearest_checkpoint", "iou", "pca", "diversity", "summary",
                             "against_noise", "verdict", "plots"]
    against = on_disk["against_noise"]  # generated vs checkpoints moved as far by noise
    assert against["generated_mean"] == pytest.approx(np.mean(results.generated))
    assert against["noise_mean"] == pytest.approx(np.mean(results.baselines["noise_matched"]))
    assert against["beats_noise"] == (against["margin"] > 2 * against["standard_error"])
    assert results.metric == "accuracy" and results.higher_is_better is True
    expected = [digits_evaluate(load_state_dict(p))["accuracy"] for p in checkpoints]
    assert results.checkpoints == expected
    assert results.generated[0] == expected[0]  # the exact copy scores the same
    assert results.generated[1] < min(expected)  # heavy noise hurts
    summary = results.summary["checkpoints"]
    assert summary.n == 5 and summary.min == min(expected) and summary.max == max(expected)
    assert summary.mean == pytest.approx(np.mean(expected))
    assert summary.std == pytest.approx(np.std(expected))
    assert on_disk["summary"]["checkpoints"] == {"n": 5, "n_nonfinite": 0, "mean": summary.mean,
                                                 "min": summary.min, "max": summary.max, "std": summary.std}
    assert results.generated_files == [str(p) for p in generated]

    report = (generated_dir / "report.md").read_text()
    assert "| training checkpoints | 5 |" in report and "| generated | 2 |" in report
    assert f"{np.mean(results.generated):.2f}" in report
    assert "lower accuracy than the training checkpoints" in report and "worst generated model" in report

    console = Console(record=True, width=140)
    console.print(results_table(results))
    text = console.export_text()
    assert "training checkpoints" in text and "generated" in text and f"{summary.mean:.2f}" in text


def test_evaluate_models_loss_metric_and_nan_become_null(tmp_path, make_state_dict):
    ckpt_dir, gen_dir = tmp_path / "ckpts", tmp_path / "gen"
    for i in range(2):
        save_state_dict(make_state_dict(i), ckpt_dir / f"{i}.safetensors")
    save_state_dict(make_state_dict(5), gen_dir / "g.safetensors")
    evaluator = tmp_path / "loss_eval.py"
    evaluator.write_text(
        "import math\n"
        "def evaluate(sd):\n"
        "    return {'loss': math.nan if int(sd['bn.num_batches_tracked']) == 105 else 1.0}\n"
    )
    results = evaluate_models(
        list_checkpoints(ckpt_dir), [gen_dir / "g.safetensors"], f"{evaluator}:evaluate", out_dir=gen_dir,
        progress=False,
    )
    assert results.higher_is_better is False
    on_disk = json.loads((gen_dir / "results.json").read_text())  # strict JSON: NaN written as null
    assert on_disk["generated"] == [None]
    assert on_disk["summary"]["generated"]["n_nonfinite"] == 1
    assert "No finite loss values" in (gen_dir / "report.md").read_text()


def test_empty_generated_folder(digits_zoo, tmp_path):
    (tmp_path / "gen").mkdir()
    with pytest.raises(RpgenError, match="no generated models"):
        evaluate_models(list_checkpoints(digits_zoo), [], "rpgen.zoo.digits:evaluate", out_dir=tmp_path / "gen",
                        progress=False)


def test_wrong_architecture_generated_model_names_file_and_key(digits_zoo, tmp_path):
    gen = tmp_path / "gen"
    sd = load_state_dict(digits_zoo / "0000.safetensors")
    sd["fc.weight"] = torch.zeros(10, 16)
    save_state_dict(sd, gen / "bad.safetensors")
    shape_error = r"bad\.safetensors: key 'fc\.weight' has shape \[10, 16\], expected \[10, 32\]"
    with pytest.raises(RpgenError, match=shape_error):
        evaluate_models(list_checkpoints(digits_zoo), [gen / "bad.safetensors"], "rpgen.zoo.digits:evaluate",
                        out_dir=gen, progress=False)
    del sd["fc.weight"]
    save_state_dict(sd, gen / "bad.safetensors")
    with pytest.raises(RpgenError, match=r"bad\.safetensors: missing key 'fc\.weight'"):
        evaluate_models(list_checkpoints(digits_zoo), [gen / "bad.safetensors"], "rpgen.zoo.digits:evaluate",
                        out_dir=gen, progress=False)
    assert not (gen / "results.json").exists()


def test_evaluate_run_reads_config(digits_zoo, generated_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(RpgenError, match=r"is not an rpgen run directory \(no config.toml\)"):
        evaluate_run(run_dir, generated_dir, "rpgen.zoo.digits:evaluate", progress=False)
    # the run's config is read by the config loader: every key checked, errors name the file
    cases = [(b"[data]\ntoken_size = 8\n", "missing key data.checkpoint_dir"),
             (b"[data]\nother = 1\n", "unknown key data.other"), (b"[data\n", "invalid TOML"),
             (b"[data]\ncheckpoint_dir = '\xff'\n", "not a UTF-8 text file")]
    for text, message in cases:
        (run_dir / "config.toml").write_bytes(text)
        with pytest.raises(RpgenError, match=message) as error:
            evaluate_run(run_dir, generated_dir, "rpgen.zoo.digits:evaluate", progress=False)
        assert "config.toml" in str(error.value) and "\n" not in str(error.value)

    (run_dir / "config.toml").write_text(f"[data]\ncheckpoint_dir = {json.dumps(str(digits_zoo))}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    expected = r"no generated models \(\*\.safetensors files, peft adapter folders or model folders\) in"
    with pytest.raises(RpgenError, match=expected):
        evaluate_run(run_dir, empty, "rpgen.zoo.digits:evaluate", progress=False)

    results = evaluate_run(run_dir, generated_dir, "rpgen.zoo.digits:evaluate", progress=True)
    assert len(results.checkpoints) == 5 and len(results.generated) == 2
    assert (generated_dir / "results.json").is_file() and (generated_dir / "report.md").is_file()


def test_own_checkpoints_example_end_to_end(tmp_path):
    """The README's example: make checkpoints with plain torch, evaluate them through a file spec."""
    example = Path(__file__).resolve().parents[2] / "examples" / "own_checkpoints"
    spec = importlib.util.spec_from_file_location("make_checkpoints_example", example / "make_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script's main() does: a tiny MLP trains fastest on one thread
    try:
        with torch.random.fork_rng():
            paths = module.make_checkpoints(tmp_path / "ckpts", num=3, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in list_checkpoints(tmp_path / "ckpts")] == [p.name for p in paths]

    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy(paths[-1], gen / "g.safetensors")
    results = evaluate_models(paths, [gen / "g.safetensors"], f"{example / 'evaluator.py'}:evaluate", out_dir=gen,
                              progress=False)
    assert all(a > 90.0 for a in results.checkpoints), results.checkpoints
    assert results.generated == [results.checkpoints[-1]]


# --- evidence: baselines, novelty, per-example results ------------------------------------------


def test_results_carry_baselines_novelty_iou_and_plots(generated_dir, evaluated):
    results, on_disk = evaluated
    assert list(on_disk["baselines"]) == ["noise_0.001", "noise_0.01", "noise_0.03", "noise_0.1", "noise_1",
                                          "noise_matched", "average", "interpolation", "gaussian"]
    # the matched noise sits at the generated models' median distance (here: between a copy and a far model)
    matched = np.median(on_disk["novelty"]["noise_matched"])
    assert matched == pytest.approx(np.median(on_disk["novelty"]["generated"]), rel=0.1)
    assert len(on_disk["baselines"]["noise_1"]) == 5 and len(on_disk["baselines"]["average"]) == 1
    assert np.mean(on_disk["baselines"]["noise_1"]) < 50 < np.mean(on_disk["baselines"]["noise_0.001"])
    for group in ("generated", "checkpoints", *on_disk["baselines"]):
        assert len(on_disk["novelty"][group]) == len(on_disk["iou"][group]), group
    # gen_0000 is a copy of checkpoint 0: novelty 0, same mistakes; gen_0001 is far and behaves differently
    assert on_disk["novelty"]["generated"][0] == 0.0 and on_disk["iou"]["generated"][0] == 1.0
    assert on_disk["nearest_checkpoint"]["generated"][0] == 0
    assert on_disk["novelty"]["generated"][1] > 10 and on_disk["iou"]["generated"][1] < 0.5
    assert np.median(on_disk["novelty"]["checkpoints"]) == pytest.approx(1.0)
    noise_novelty = [np.median(on_disk["novelty"][f"noise_{s}"]) for s in ("0.001", "0.01", "0.03", "0.1", "1")]
    assert noise_novelty == sorted(noise_novelty)
    assert len(on_disk["pca"]["checkpoints"]) == 5 and len(on_disk["pca"]["generated"]) == 2
    assert on_disk["diversity"]["num_models"] == 2 and on_disk["diversity"]["not_near_copies"] == 1
    assert "near-copies" not in results.verdict or "new models" not in results.verdict

    report = (generated_dir / "report.md").read_text()
    assert report.splitlines()[2] == f"**{results.verdict}**"
    assert "| checkpoint + noise 1 std | 5 |" in report and "| average of all checkpoints | 1 |" in report
    for name in ("metric_hist.png", "novelty.png", "pca.png"):
        assert f"]({name})" in report
        assert (generated_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gen_0000.safetensors | " in report


def test_without_baselines(digits_zoo, generated_dir):
    results = evaluate_models(list_checkpoints(digits_zoo), sorted(generated_dir.glob("*.safetensors")),
                              "rpgen.zoo.digits:evaluate", out_dir=generated_dir, with_baselines=False,
                              progress=False)
    assert results.baselines == {} and set(results.novelty) == {"generated", "checkpoints"}
    assert "noise" not in (generated_dir / "report.md").read_text()


def test_per_example_is_optional_and_accepts_tensors_and_0_1(digits_zoo, generated_dir, tmp_path):
    evaluator = tmp_path / "ev.py"
    evaluator.write_text(
        "import torch\n"
        "from rpgen.zoo.digits import evaluate as digits\n"
        "def plain(sd):\n"
        "    return {'accuracy': digits(sd)['accuracy']}\n"
        "def as_ints(sd):\n"
        "    out = digits(sd)\n"
        "    return {'accuracy': out['accuracy'], 'per_example': torch.tensor(out['per_example']).int()}\n"
    )
    paths = list_checkpoints(digits_zoo), sorted(generated_dir.glob("*.safetensors"))
    plain = evaluate_models(*paths, f"{evaluator}:plain", out_dir=tmp_path / "a", progress=False)
    assert plain.iou is None and "iou" not in plain.to_dict()
    assert "not measured" in (tmp_path / "a" / "report.md").read_text().lower()
    ints = evaluate_models(*paths, f"{evaluator}:as_ints", out_dir=tmp_path / "b", progress=False)
    reference = evaluate_models(*paths, "rpgen.zoo.digits:evaluate", out_dir=tmp_path / "c", progress=False)
    assert ints.iou == reference.iou


def test_per_example_of_the_wrong_length_or_missing_names_both_models(digits_zoo, tmp_path):
    evaluator = tmp_path / "ev.py"
    evaluator.write_text(
        "from rpgen.zoo.digits import evaluate as digits\n"
        "def short_for_noisy(sd):\n"
        "    out = digits(sd)\n"
        "    noisy = float(sd['fc.bias'].abs().max()) > 5\n"
        "    return {**out, 'per_example': out['per_example'][:10]} if noisy else out\n"
        "def missing_for_noisy(sd):\n"
        "    out = digits(sd)\n"
        "    return {'accuracy': out['accuracy']} if float(sd['fc.bias'].abs().max()) > 5 else out\n"
    )
    noisy = load_state_dict(digits_zoo / "0001.safetensors")
    noisy["fc.bias"] = noisy["fc.bias"] + 10.0
    save_state_dict(noisy, tmp_path / "gen" / "g.safetensors")
    paths = list_checkpoints(digits_zoo), [tmp_path / "gen" / "g.safetensors"]
    with pytest.raises(RpgenError, match=r"returned 10 per-example results on .*g\.safetensors but 540 per-example "
                                         r"results on .*0000\.safetensors"):
        evaluate_models(*paths, f"{evaluator}:short_for_noisy", out_dir=tmp_path / "gen", progress=False)
    with pytest.raises(RpgenError, match=r"returned no 'per_example' on .*g\.safetensors but 540"):
        evaluate_models(*paths, f"{evaluator}:missing_for_noisy", out_dir=tmp_path / "gen", progress=False)
    assert not (tmp_path / "gen" / "results.json").exists()


def test_two_argument_evaluator_gets_each_model_path_and_none_for_baselines(digits_zoo, generated_dir, tmp_path):
    log = tmp_path / "paths.log"
    evaluator = tmp_path / "ev.py"
    evaluator.write_text(
        "from rpgen.zoo.digits import evaluate as digits\n"
        "def evaluate(state_dict, path):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{path}\\n')\n"
        "    return {'accuracy': digits(state_dict)['accuracy']}\n"
    )
    checkpoints, generated = list_checkpoints(digits_zoo), sorted(generated_dir.glob("*.safetensors"))
    results = evaluate_models(checkpoints, generated, f"{evaluator}:evaluate", out_dir=generated_dir, progress=False)
    seen = log.read_text().splitlines()
    num_models = len(generated) + len(checkpoints)
    assert seen[:num_models] == [str(p) for p in [*generated, *checkpoints]]
    assert seen[num_models:] == ["None"] * sum(len(v) for v in results.baselines.values())
    one_arg = evaluate_models(checkpoints, generated, "rpgen.zoo.digits:evaluate", out_dir=tmp_path / "one",
                              progress=False)
    assert results.checkpoints == one_arg.checkpoints and results.generated == one_arg.generated


# --- generated models with NaN/inf weights, through the CLI --------------------------------------


@pytest.fixture(scope="module")
def trained(digits_zoo, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("nonfinite") / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args())
    assert result.exit_code == 0, result.output
    return run


def _break(path: Path, key: str, value: float) -> None:
    """Write ``value`` into one element of tensor ``key`` of a generated file, keeping its metadata."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[key].view(-1)[0] = value
    save_file(tensors, str(path), metadata=metadata)


def test_evaluate_reports_generated_models_with_nan_or_inf_weights(trained, tmp_path):
    gen = tmp_path / "gen"
    assert rpgen("generate", trained, "--num", 4, "--out", gen, "--no-progress").exit_code == 0
    files = sorted(gen.glob("*.safetensors"))
    _break(files[1], "conv1.weight", float("nan"))
    _break(files[3], "fc.bias", float("inf"))
    result = rpgen("evaluate", trained, "--generated", gen, "--evaluator", "rpgen.zoo.digits:evaluate",
                   "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())  # strict JSON
    assert results["nonfinite_generated"] == [str(files[1]), str(files[3])]
    for i in (1, 3):
        assert results["novelty"]["generated"][i] is None and results["nearest_checkpoint"]["generated"][i] is None
        assert results["pca"]["generated"][i] == [None, None] and results["iou"]["generated"][i] is None
    for i in (0, 2):
        assert results["novelty"]["generated"][i] > 0 and results["nearest_checkpoint"]["generated"][i] >= 0
        assert all(isinstance(c, float) for c in results["pca"]["generated"][i])
    assert len(results["generated"]) == 4 and "noise_matched" in results["baselines"]
    assert results["diversity"]["num_models"] == 4 and results["diversity"]["distinct_models"] <= 2
    assert results["verdict"].startswith("2 of 4 generated models have non-finite weights (NaN/inf)")
    assert "Generated models are" in results["verdict"]
    report = (gen / "report.md").read_text()
    assert report.splitlines()[2] == f"**{results['verdict']}**"
    assert f"Files: `{files[1].name}`, `{files[3].name}`." in report
    assert f"| {files[1].name} | " in report and "| - | - (NaN/inf weights) | - |" in report
    assert (gen / "pca.png").is_file() and "2 of 4 generated models" in " ".join(result.output.split())


def test_evaluate_when_every_generated_model_is_broken(trained, tmp_path):
    gen = tmp_path / "gen"
    assert rpgen("generate", trained, "--num", 2, "--out", gen, "--no-progress").exit_code == 0
    for path in gen.glob("*.safetensors"):
        _break(path, "conv1.weight", float("nan"))
    result = rpgen("evaluate", trained, "--generated", gen, "--evaluator", "rpgen.zoo.digits:evaluate",
                   "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())
    assert len(results["nonfinite_generated"]) == 2 and "noise_matched" not in results["baselines"]
    assert results["verdict"].startswith("All 2 generated models have non-finite weights (NaN/inf): they are broken")
    assert results["novelty"]["generated"] == [None, None] and results["diversity"]["distinct_models"] == 0
    assert "All 2 generated models" in (gen / "report.md").read_text()
