"""Folders of peft adapter folders as checkpoints: listing, checks, and adapter folders out of generate.

The adapters here are written by hand in peft's file format (adapter_config.json +
adapter_model.safetensors); tests/zoo/test_minilm_sentiment.py round-trips real peft adapters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rpgen.formats.adapter_folders import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from rpgen.formats.checkpoints import LazyCheckpoint, load_state_dict
from rpgen.formats.listing import list_checkpoints
from conftest import rpgen, set_args, tiny
from rpgen.errors import RpgenError

TINY = tiny("model.denoiser_channels=[1, 8, 1]", "train.steps=6", "train.diffusion_batch=32", "sample.steps=3")

CONFIG = {"peft_type": "LORA", "base_model_name_or_path": "/models/base", "task_type": "SEQ_CLS", "r": 2,
          "lora_alpha": 4, "use_dora": False, "target_modules": ["query", "value"],
          "modules_to_save": ["classifier", "score"], "inference_mode": True, "lora_dropout": 0.0}


def lora_state_dict(seed: int, rank: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer in range(2):
        for target in ("query", "value"):
            prefix = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{target}"
            sd[f"{prefix}.lora_A.weight"] = torch.randn(rank, 8, generator=g)
            sd[f"{prefix}.lora_B.weight"] = 0.1 * torch.randn(8, rank, generator=g)
    sd["base_model.model.classifier.weight"] = torch.randn(2, 8, generator=g)
    sd["base_model.model.classifier.bias"] = torch.randn(2, generator=g)
    return sd


def write_adapter(folder: Path, state_dict: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config or CONFIG))
    save_file(state_dict, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return folder


@pytest.fixture
def adapter_zoo(tmp_path) -> Path:
    zoo = tmp_path / "adapters"
    for i in range(4):
        write_adapter(zoo / f"{i:04d}", lora_state_dict(i))
    (zoo / "zoo.json").write_text("{}")  # other files beside the folders are ignored
    return zoo


def test_adapter_folders_are_checkpoints(adapter_zoo):
    paths = list_checkpoints(adapter_zoo)
    assert [p.name for p in paths] == ["0000", "0001", "0002", "0003"]
    expected = lora_state_dict(1)
    loaded = load_state_dict(paths[1])
    lazy = LazyCheckpoint(paths[1])
    assert set(loaded) == set(expected) == set(lazy)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value) and torch.equal(lazy[key], value)


def changed(config: dict, **fields) -> dict:
    return {**config, **fields}


@pytest.mark.parametrize("fields, field", [
    ({"r": 4}, "r"),
    ({"target_modules": ["query", "key", "value"]}, "target_modules"),
    ({"base_model_name_or_path": "/models/other"}, "base_model_name_or_path"),
    ({"use_dora": True}, "use_dora"),
])
def test_adapters_must_share_base_rank_and_targets(adapter_zoo, fields, field):
    (adapter_zoo / "0002" / ADAPTER_CONFIG).write_text(json.dumps(changed(CONFIG, **fields)))
    with pytest.raises(RpgenError, match=rf"0002: adapter_config\.json has {field} = .*but .*0000 has"):
        list_checkpoints(adapter_zoo)


def test_target_order_does_not_matter(adapter_zoo):
    (adapter_zoo / "0001" / ADAPTER_CONFIG).write_text(json.dumps(changed(CONFIG, target_modules=["value", "query"])))
    assert len(list_checkpoints(adapter_zoo)) == 4


def test_incomplete_or_mixed_folders_are_refused(adapter_zoo, tmp_path):
    (adapter_zoo / "0003" / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(RpgenError, match=r"0003: no adapter_model\.safetensors"):
        list_checkpoints(adapter_zoo)
    (adapter_zoo / "0003" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(RpgenError, match=r"0003: holds adapter_model\.bin \(pickle\)"):
        list_checkpoints(adapter_zoo)
    shutil.rmtree(adapter_zoo / "0003")
    weights_only = adapter_zoo / "0004"
    weights_only.mkdir()
    save_file(lora_state_dict(4), str(weights_only / ADAPTER_WEIGHTS))
    with pytest.raises(RpgenError, match=r"0004: no adapter_config\.json"):
        list_checkpoints(adapter_zoo)
    shutil.rmtree(weights_only)
    save_file(lora_state_dict(5), str(adapter_zoo / "loose.safetensors"))
    with pytest.raises(RpgenError, match="mixes checkpoint files .* and peft adapter folders"):
        list_checkpoints(adapter_zoo)
    (adapter_zoo / "loose.safetensors").unlink()
    (adapter_zoo / "0001" / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(RpgenError, match=r"0001/adapter_config\.json: not valid JSON"):
        list_checkpoints(adapter_zoo)


def test_train_names_the_folder_with_other_keys_or_rank(adapter_zoo, tmp_path):
    shutil.rmtree(adapter_zoo / "0003")
    write_adapter(adapter_zoo / "0003", lora_state_dict(3, rank=3))  # config says r=2, weights are rank 3
    result = rpgen("train", str(adapter_zoo), "--out", str(tmp_path / "run"), "--no-progress",
                                 *set_args(TINY))
    assert result.exit_code == 1
    text = result.output.strip()
    assert text.startswith("error:") and "0003" in text and "lora_A.weight" in text and "shape" in text, text
    assert not (tmp_path / "run").exists()

    (adapter_zoo / "0003" / ADAPTER_CONFIG).write_text(json.dumps(changed(CONFIG, r=3)))
    result = rpgen("train", str(adapter_zoo), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.exit_code == 1 and "0003" in result.output and "r = 3" in result.output, result.output


def test_train_generate_evaluate_write_adapter_folders(adapter_zoo, tmp_path):
    run, gen = tmp_path / "run", tmp_path / "gen"
    result = rpgen("train", str(adapter_zoo), "--out", str(run), "--no-progress",
                                 *set_args(TINY))
    assert result.exit_code == 0, result.output
    assert json.loads((run / ADAPTER_CONFIG).read_text()) == CONFIG
    assert json.loads((run / "run.json").read_text())["checkpoint_files"] == ["0000", "0001", "0002", "0003"]
    result = rpgen("generate", str(run), "--num", "3", "--out", str(gen), "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in gen.iterdir()) == [".rpgen", "0000", "0001", "0002", "generation.json"]
    reference = lora_state_dict(0)
    for folder in sorted(p for p in gen.iterdir() if p.is_dir()):
        assert sorted(p.name for p in folder.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
        assert json.loads((folder / ADAPTER_CONFIG).read_text()) == CONFIG
        tensors = load_file(folder / ADAPTER_WEIGHTS)
        assert {k: v.shape for k, v in tensors.items()} == {k: v.shape for k, v in reference.items()}
        assert all(bool(torch.isfinite(v).all()) for v in tensors.values())
    assert len(list_checkpoints(gen)) == 3  # generated adapters are a valid adapter zoo themselves

    evaluator = tmp_path / "norm.py"
    evaluator.write_text("def evaluate(sd):\n    return {'norm': float(sum(v.norm() for v in sd.values()))}\n")
    result = rpgen("evaluate", str(run), "--generated", str(gen), "--evaluator", f"{evaluator}:evaluate",
                                 "--no-baselines", "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())
    assert len(results["generated"]) == 3 and len(results["checkpoints"]) == 4
    assert [Path(p).name for p in results["generated_files"]] == ["0000", "0001", "0002"]

    # a two-argument evaluator gets each adapter folder and can read its adapter_config.json
    evaluator.write_text("import json\n"
                         "def evaluate(sd, path):\n"
                         "    config = json.loads((path / 'adapter_config.json').read_text())\n"
                         "    norm = float(sum(v.norm() for v in sd.values()))\n"
                         "    return {'norm': norm, 'alpha': config['lora_alpha']}\n")
    result = rpgen("evaluate", str(run), "--generated", str(gen), "--evaluator", f"{evaluator}:evaluate",
                   "--no-baselines", "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((gen / "results.json").read_text())
    alphas = [m["alpha"] for m in results["checkpoint_metrics"] + results["generated_metrics"]]
    assert alphas == [CONFIG["lora_alpha"]] * 7


def test_pdiff_writes_adapter_folders_too(adapter_zoo, tmp_path):
    run, gen = tmp_path / "run", tmp_path / "gen"
    settings = ["model.method=pdiff", "pdiff.ae_steps=3", "pdiff.ddpm_steps=3", "train.batch_size=2",
                "train.warmup_steps=1", "train.log_every=1", "sample.steps=2"]
    result = rpgen("train", str(adapter_zoo), "--out", str(run), "--no-progress",
                                 *set_args(settings))
    assert result.exit_code == 0, result.output
    result = rpgen("generate", str(run), "--num", "2", "--out", str(gen), "--no-progress")
    assert result.exit_code == 0, result.output
    assert [p.name for p in list_checkpoints(gen)] == ["0000", "0001"]
    assert json.loads((gen / "0001" / ADAPTER_CONFIG).read_text()) == CONFIG
