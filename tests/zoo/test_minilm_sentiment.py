"""The MiniLM adapter zoo with real peft, transformers and the bundled all-MiniLM-L6-v2.

The round trip: peft adapter folders -> rpgen train -> rpgen generate -> PeftModel.from_pretrained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rpgen.formats.adapter_folders import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from conftest import rpgen, set_args, tiny
from rpgen.errors import RpgenError
from rpgen.zoo import minilm_sentiment as zoo

TINY = tiny("model.denoiser_channels=[1, 8, 1]", "data.token_size=512", "train.steps=4",
            "train.diffusion_batch=16", "train.warmup_steps=1", "train.log_every=2", "sample.steps=2")


def test_data_splits_are_fixed_disjoint_and_balanced_enough():
    data = zoo.load_data()
    (train, y_train), (test, y_test), (ood, y_ood) = data["train"], data["test"], data["ood"]
    assert (len(train), len(test), len(ood)) == (4470, 1118, 730)
    assert not set(train) & set(test) and not set(ood) & (set(train) | set(test))
    for labels in (y_train, y_test, y_ood):
        assert set(labels) == {0, 1} and 0.25 < sum(labels) / len(labels) < 0.75
    labelled = dict(zip(train + test, y_train + y_test))
    assert labelled["good"] == 1 and labelled["terrible"] == 0


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "dora"])
def peft_zoo(request, tmp_path_factory) -> Path:
    """3 real peft adapter folders (rank 2) of the bundled base: fresh adapters moved by noise."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    out = tmp_path_factory.mktemp("peft") / ("dora" if request.param else "lora")
    model = zoo.build_model(zoo.bundled_base(), rank=2, dora=request.param)
    start = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        set_peft_model_state_dict(model, {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in start.items()})
        model.save_pretrained(str(out / f"{i:04d}"))
    return out


def test_generated_adapters_load_in_peft_unchanged(peft_zoo, tmp_path):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForSequenceClassification

    run, gen = tmp_path / "run", tmp_path / "gen"
    result = rpgen("train", str(peft_zoo), "--out", str(run), "--no-progress",
                                 *set_args(TINY))
    assert result.exit_code == 0, result.output
    result = rpgen("generate", str(run), "--num", "2", "--out", str(gen), "--no-progress")
    assert result.exit_code == 0, result.output

    folder = gen / "0001"
    zoo_config = json.loads((peft_zoo / "0000" / ADAPTER_CONFIG).read_text())
    assert json.loads((folder / ADAPTER_CONFIG).read_text()) == zoo_config
    written = load_file(folder / ADAPTER_WEIGHTS)
    base = AutoModelForSequenceClassification.from_pretrained(str(zoo.bundled_base()), num_labels=2)
    model = PeftModel.from_pretrained(base, str(folder))
    loaded = get_peft_model_state_dict(model)
    assert set(loaded) == set(written)
    for key, tensor in written.items():
        assert torch.equal(loaded[key], tensor), key
    ids = torch.tensor([[101, 2204, 102]])  # [CLS] good [SEP]
    with torch.inference_mode():
        assert model(input_ids=ids).logits.shape == (1, 2)

    scores = zoo.evaluate(written)
    assert set(scores) == {"accuracy", "ood_accuracy", "per_example"}
    assert 0 <= scores["accuracy"] <= 100 and len(scores["per_example"]) == 1118


def test_evaluator_reads_rank_dora_and_targets_from_keys(peft_zoo):
    state_dict = load_file(peft_zoo / "0000" / ADAPTER_WEIGHTS)
    rank, dora, targets = zoo.adapter_settings(state_dict)
    assert (rank, targets) == (2, ("query", "value")) and dora == peft_zoo.name.endswith("dora")
    with pytest.raises(RpgenError, match="not a LoRA/DoRA adapter"):
        zoo.adapter_settings({"classifier.weight": torch.zeros(2, 384)})
    del state_dict["base_model.model.classifier.bias"]
    with pytest.raises(RpgenError, match="missing key 'base_model.model.classifier.bias'"):
        zoo.evaluate(state_dict)


def test_evaluator_takes_lora_alpha_from_the_adapter_folder(peft_zoo, tmp_path):
    """With the folder, the evaluator scores what PeftModel.from_pretrained(folder) computes; without it,
    the zoo's lora_alpha = 2r is assumed."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from rpgen.evaluation.evaluator import run_evaluator, takes_path

    state_dict = load_file(peft_zoo / "0000" / ADAPTER_WEIGHTS)
    assumed = zoo.evaluate(state_dict)
    assert takes_path(zoo.evaluate) and zoo.evaluate(state_dict, peft_zoo / "0000") == assumed  # alpha = 2r = 4
    folder = tmp_path / "alpha"
    shutil.copytree(peft_zoo / "0000", folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    assert config["lora_alpha"] == 2 * config["r"]
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "lora_alpha": 400}))
    scores = run_evaluator(zoo.evaluate, state_dict, name=str(folder), path=folder)
    base = AutoModelForSequenceClassification.from_pretrained(str(zoo.bundled_base()), num_labels=2)
    reference = PeftModel.from_pretrained(base, str(folder)).eval()
    correct = zoo._accuracy(reference, zoo._encoded(str(zoo.bundled_base()), "test"))
    assert scores.metrics["accuracy"] == pytest.approx(100.0 * correct.float().mean().item())
    assert torch.equal(scores.correct, correct) and scores.correct.tolist() != assumed["per_example"]
    for field, value, message in [("lora_alpha", "big", "lora_alpha must be a positive number"),
                                  ("r", 3, "r = 3, but the adapter's lora_A weights have rank 2"),
                                  ("use_dora", not config["use_dora"], "use_dora = ")]:
        (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, field: value}))
        with pytest.raises(RpgenError, match=message) as error:
            zoo.evaluate(state_dict, folder)
        assert ADAPTER_CONFIG in str(error.value)


def test_a_base_model_path_that_does_not_exist_is_a_one_line_error(tmp_path, one_line_error):
    missing = tmp_path / "no-such-model"
    one_line_error(rpgen("collect", "minilm-sentiment", "--base", str(missing), "--out",
                                       str(tmp_path / "zoo"), "--no-progress"), missing, "does not exist")
    assert not (tmp_path / "zoo").exists()
    (tmp_path / "empty").mkdir()
    one_line_error(rpgen("collect", "minilm-sentiment", "--base", str(tmp_path / "empty"), "--out",
                                       str(tmp_path / "zoo"), "--no-progress"), "no config.json")
    with pytest.raises(RpgenError, match="does not exist"):
        zoo.make_evaluator(base=missing)
    one_line_error(rpgen("collect", "digits", "--rank", "16", "--out", str(tmp_path / "d")),
                   "minilm-sentiment zoo only")
    one_line_error(rpgen("collect", "minilm-sentiment", "--rank", "0", "--out", str(tmp_path / "z")),
                   "--rank must be >= 1")


@pytest.mark.slow
def test_collect_trains_adapters_that_beat_the_head_only_baseline(tmp_path):
    """The real recipe, shortened: 1 warm-up epoch, 2 saved epochs (about 1 minute on 2 cores)."""
    out = tmp_path / "zoo"
    paths = zoo.collect_minilm_sentiment(out, rank=4, dora=True, num_checkpoints=2, warmup_epochs=1, progress=False)
    assert [p.name for p in paths] == ["0000", "0001"]
    info = json.loads((out / zoo.ZOO_INFO).read_text())
    assert info["kind"] == "dora" and info["generated_params"] == 42242 and len(info["epoch_losses"]) == 3
    config = json.loads((out / "0000" / ADAPTER_CONFIG).read_text())
    assert config["r"] == 4 and config["use_dora"] and sorted(config["target_modules"]) == ["query", "value"]
    head = zoo.head_only_accuracy()
    scores = [zoo.evaluate(load_file(p / ADAPTER_WEIGHTS)) for p in paths]
    assert all(s["accuracy"] > head["test"] + 2 for s in scores), (scores, head)
