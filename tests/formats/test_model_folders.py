"""transformers model folders as checkpoints (rpgen.formats.model_folders), generated models in the same form
(rpgen.formats.output_forms), and the order of tensors in the token sequence (checkpoints.tensor_order).

The folders are real: random-init GPT-2 models with tied embeddings written by ``save_pretrained``
(sharded with ``max_shard_size``), and Trainer ``checkpoint-N/`` folders from the tiny-gpt2 zoo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from conftest import rpgen, set_args, tiny
import rpgen.formats.model_folders as hf
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.formats.checkpoints import LazyCheckpoint, load_state_dict, tensor_order
from rpgen.formats.listing import list_checkpoints
from rpgen.errors import RpgenError
from rpgen.formats.safetensors_io import SafetensorsReader

TINY = tiny("model.denoiser_channels=[1, 8, 1]", "train.steps=6", "train.diffusion_batch=32", "sample.steps=3")
SHARD = "3KB"  # forces several shards on these tiny models


def gpt2(seed: int, *, n_layer: int = 2, n_embd: int = 8):
    """A random-init GPT-2 LM with tied input/output embeddings (a different model per seed)."""
    config = transformers.GPT2Config(vocab_size=12, n_positions=8, n_embd=n_embd, n_layer=n_layer, n_head=2,
                                     tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2LMHeadModel(config)


def write_zoo(zoo: Path, num: int = 4, **save_kwargs) -> Path:
    for i in range(num):
        gpt2(i).save_pretrained(zoo / f"model-{i}", **save_kwargs)
    return zoo


@pytest.fixture
def zoo(tmp_path) -> Path:
    return write_zoo(tmp_path / "zoo")


@pytest.fixture
def sharded_zoo(tmp_path) -> Path:
    return write_zoo(tmp_path / "sharded", max_shard_size=SHARD)


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """What save_pretrained wrote, read with safetensors (no rpgen code)."""
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_model_folders_are_checkpoints(zoo):
    paths = list_checkpoints(zoo)
    assert [p.name for p in paths] == ["model-0", "model-1", "model-2", "model-3"]
    expected = saved_tensors(zoo / "model-2")
    assert "lm_head.weight" not in expected  # the tied copy is not saved, so it is not a checkpoint key
    loaded, lazy = load_state_dict(paths[2]), LazyCheckpoint(paths[2])
    assert list(loaded) == list(lazy) and set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value) and torch.equal(lazy[key], value)


def test_sharded_folders_read_each_tensor_from_its_shard(tmp_path):
    folder = tmp_path / "wide"
    gpt2(0, n_embd=64).save_pretrained(folder, max_shard_size="100KB")  # shards larger than a read buffer
    weight_map = json.loads((folder / hf.SAFE_INDEX).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 3, shards
    expected = saved_tensors(folder)
    lazy = LazyCheckpoint(folder)
    assert set(lazy) == set(expected) == set(weight_map)
    assert all(torch.equal(load_state_dict(folder)[k], v) for k, v in expected.items())
    # Cut one shard short after opening: tensors of the other shards still read (each tensor
    # comes from the file the index names, read when asked); the cut shard's last one fails naming it.
    victim = shards[1]
    last = max(SafetensorsReader(folder / victim).entries.values(), key=lambda e: e.offset).name
    with open(folder / victim, "r+b") as f:
        f.truncate(64)
    for key, shard in weight_map.items():
        if shard != victim:
            assert torch.equal(lazy[key], expected[key])
    with pytest.raises(RpgenError, match=victim):
        lazy[last]


def test_index_naming_the_wrong_shard_is_refused(sharded_zoo):
    folder = sharded_zoo / "model-0"
    index = json.loads((folder / hf.SAFE_INDEX).read_text())
    key, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in index["weight_map"].values() if s != shard)
    index["weight_map"][key] = other
    (folder / hf.SAFE_INDEX).write_text(json.dumps(index))
    for read in (LazyCheckpoint, load_state_dict):
        with pytest.raises(RpgenError, match=rf"{hf.SAFE_INDEX}: .*{key}"):
            read(folder)


def check_generated_folder(folder: Path, zoo_folder: Path) -> None:
    """Same files as the zoo's folder (config, index, shards), same keys per shard, and
    from_pretrained loads it with the tie kept and the generated weights in place."""
    zoo_files = {p.name for p in zoo_folder.iterdir()
                 if p.suffix == ".safetensors" or p.name in (hf.MODEL_CONFIG, hf.GENERATION_CONFIG, hf.SAFE_INDEX)}
    assert {p.name for p in folder.iterdir()} == zoo_files
    assert (folder / hf.MODEL_CONFIG).read_text() == (zoo_folder / hf.MODEL_CONFIG).read_text()
    for shard in (p.name for p in zoo_folder.glob("*.safetensors")):
        assert set(load_file(folder / shard)) == set(load_file(zoo_folder / shard)), shard
    if (zoo_folder / hf.SAFE_INDEX).is_file():
        assert hf.read_index(folder) == hf.read_index(zoo_folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    written = saved_tensors(folder)
    assert torch.equal(model.transformer.wte.weight.detach(), written["transformer.wte.weight"])
    assert not torch.equal(written["transformer.wte.weight"], saved_tensors(zoo_folder)["transformer.wte.weight"])
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_generated_models_come_back_as_model_folders(kind, zoo, sharded_zoo, tmp_path):
    source = zoo if kind == "single" else sharded_zoo
    (source / "model-0" / hf.GENERATION_CONFIG).write_text(json.dumps({"bos_token_id": 3, "max_length": 7}))
    run, gen = tmp_path / "run", tmp_path / "gen"
    result = rpgen("train", source, "--out", run, "--no-progress", *set_args(TINY))
    assert result.exit_code == 0, result.output
    assert (run / hf.MODEL_CONFIG).is_file() and (run / hf.GENERATION_CONFIG).is_file()
    assert (run / hf.SAFE_INDEX).is_file() == (kind == "sharded")
    result = rpgen("generate", run, "--num", 2, "--out", gen, "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in gen.iterdir() if p.is_dir()) == ["0000", "0001"]
    for name in ("0000", "0001"):
        check_generated_folder(gen / name, source / "model-0")
        assert json.loads((gen / name / hf.GENERATION_CONFIG).read_text())["max_length"] == 7
    # The generated folders are checkpoints again: evaluate lists and loads them.
    assert [p.name for p in list_checkpoints(gen)] == ["0000", "0001"]


def test_trainer_folders_are_used_as_they_are_and_never_unpickled(tmp_path):
    from rpgen.zoo.tiny_gpt2 import collect_tiny_gpt2

    zoo = tmp_path / "trainer"
    collect_tiny_gpt2(zoo, num_checkpoints=3, pretrain_steps=2, save_steps=5, n_embd=8, progress=False)
    names = ["checkpoint-5", "checkpoint-10", "checkpoint-15"]  # by step, not by string
    assert [p.name for p in list_checkpoints(zoo)] == names
    for name in names:  # anything rpgen unpickled would now fail to load
        for junk in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            assert (zoo / name / junk).is_file()
            (zoo / name / junk).write_bytes(b"\x80\x04not a pickle")
    result = rpgen("train", zoo, "--out", tmp_path / "run", "--no-progress", *set_args(TINY))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["checkpoint_files"] == names
    result = rpgen("generate", tmp_path / "run", "--num", 1, "--out", tmp_path / "gen", "--no-progress")
    assert result.exit_code == 0, result.output
    check_generated_folder(tmp_path / "gen" / "0000", zoo / "checkpoint-5")


def test_pickle_only_folder_is_refused_with_the_conversion(zoo, tmp_path, one_line_error):
    folder = zoo / "model-3"
    torch.save(gpt2(3).state_dict(), folder / "pytorch_model.bin")
    (folder / hf.SAFE_WEIGHTS).unlink()
    result = rpgen("train", zoo, "--out", tmp_path / "run", "--no-progress", *set_args(TINY))
    one_line_error(result, "model-3", "pytorch_model", "save_pretrained", "safe_serialization=True")


def test_config_json_must_agree_except_provenance(zoo, tmp_path, one_line_error):
    config = json.loads((zoo / "model-2" / hf.MODEL_CONFIG).read_text())
    config.update(_name_or_path="/somewhere/else", transformers_version="4.0.0", dtype="float16")
    (zoo / "model-2" / hf.MODEL_CONFIG).write_text(json.dumps(config))
    assert len(list_checkpoints(zoo)) == 4  # provenance and the saved dtype do not change weights
    config["activation_function"] = "relu"
    (zoo / "model-2" / hf.MODEL_CONFIG).write_text(json.dumps(config))
    result = rpgen("train", zoo, "--out", tmp_path / "run", "--no-progress", *set_args(TINY))
    one_line_error(result, "model-2", "config.json", "activation_function", '"relu"')
    assert not (tmp_path / "run").exists()


def test_model_at_the_top_of_a_trainer_dir_is_refused(zoo, one_line_error):
    gpt2(9).save_pretrained(zoo)  # what trainer.save_model() leaves beside the checkpoint folders
    with pytest.raises(RpgenError, match="mixes checkpoint files .* and model folders"):
        list_checkpoints(zoo)


def test_one_model_folder_is_not_a_zoo(zoo, one_line_error, tmp_path):
    """Pointing at one checkpoint-N/ must not read its optimizer.pt / rng_state.pth as checkpoints."""
    torch.save({"state": {}}, zoo / "model-0" / "optimizer.pt")
    result = rpgen("train", zoo / "model-0", "--out", tmp_path / "run", "--no-progress", *set_args(TINY))
    one_line_error(result, "model-0 is one model folder", "checkpoint-N")


def test_missing_shard_and_missing_weights_name_the_folder(sharded_zoo, zoo):
    shard = next((sharded_zoo / "model-1").glob("model-*-of-*.safetensors"))
    shard.unlink()
    with pytest.raises(RpgenError, match=rf"names shard {shard.name}"):
        list_checkpoints(sharded_zoo)
    (zoo / "model-1" / hf.SAFE_WEIGHTS).unlink()
    with pytest.raises(RpgenError, match=r"model-1: no model\.safetensors"):
        list_checkpoints(zoo)


# --- order of tensors ---------------------------------------------------------------------------

def test_tensor_order_is_natural_and_keeps_a_meaningful_recorded_order():
    names = ["h.10.w", "h.2.w", "h.1.w", "wte", "h.0.w"]
    assert tensor_order(names) == ["h.0.w", "h.1.w", "h.2.w", "h.10.w", "wte"]
    assert tensor_order(names, order="name") == ["h.0.w", "h.1.w", "h.10.w", "h.2.w", "wte"]
    assert tensor_order(names, recorded=names) == names  # e.g. a .pt file's saved order
    assert tensor_order(names, recorded=sorted(names)) == tensor_order(names)  # a sorted index says nothing
    # Without numbers of different widths, natural order is the plain sort (existing zoos keep their order).
    same_width = ["conv1.weight", "bn1.bias", "layer.weight", "layer1.weight", "fc.bias", "bn2.running_var"]
    assert tensor_order(same_width) == sorted(same_width)


def test_checkpoint_names_sort_naturally(tmp_path, make_state_dict):
    for step in (500, 1000, 1500, 50):
        save_file(make_state_dict(step), str(tmp_path / f"step-{step}.safetensors"))
    assert [p.stem for p in list_checkpoints(tmp_path)] == ["step-50", "step-500", "step-1000", "step-1500"]


def test_token_order_follows_the_layers(tmp_path):
    """12 layers: safetensors stores keys sorted (h.10 before h.2); the tokens follow the model."""
    zoo = tmp_path / "deep"
    for i in range(2):
        gpt2(i, n_layer=12).save_pretrained(zoo / f"m{i}")
    layers = [int(k.split(".")[2]) for k in CheckpointSet.open(zoo).layout(16).tensors
              for k in [k.name] if k.startswith("transformer.h.")]
    assert layers == sorted(layers) and layers[-1] == 11
    old = [t.name for t in CheckpointSet.open(zoo, order="name").layout(16).tensors]
    assert old.index("transformer.h.10.ln_1.weight") < old.index("transformer.h.2.ln_1.weight")
    # A sharded folder whose index lists the tensors in model order (not sorted) keeps that order.
    model_order = list(gpt2(0, n_layer=12).state_dict())[:-1]  # without the tied lm_head.weight
    for i in range(2):
        folder = zoo / f"m{i}"
        index = {"metadata": {}, "weight_map": dict.fromkeys(model_order, hf.SAFE_WEIGHTS)}
        (folder / hf.SAFE_INDEX).write_text(json.dumps(index))
    assert list(LazyCheckpoint(zoo / "m0")) == model_order
    assert model_order[0] == "transformer.wte.weight"
    assert list(load_state_dict(zoo / "m1")) == model_order


def test_pt_files_keep_their_saved_order(tmp_path):
    sd = {f"h.{i}.w": torch.randn(2) for i in (3, 11, 0)}
    torch.save(sd, tmp_path / "a.pt")
    assert list(load_state_dict(tmp_path / "a.pt")) == list(LazyCheckpoint(tmp_path / "a.pt")) == list(sd)
    assert list(LazyCheckpoint(tmp_path / "a.pt", order="name")) == ["h.0.w", "h.11.w", "h.3.w"]


def test_tensor_order_setting_reaches_the_run(tmp_path):
    zoo = tmp_path / "zoo"
    for i in range(2):
        gpt2(i, n_layer=11).save_pretrained(zoo / f"m{i}")
    for order, first_after_h1 in (("model", "transformer.h.2."), ("name", "transformer.h.10.")):
        run = tmp_path / order
        result = rpgen("train", zoo, "--out", run, "--no-progress", *set_args(TINY + [f"data.tensor_order={order}"]))
        assert result.exit_code == 0, result.output
        names = [t["name"] for t in json.loads((run / "tokenizer.json").read_text())["tensors"]]
        after = names[max(i for i, n in enumerate(names) if n.startswith("transformer.h.1.")) + 1]
        assert after.startswith(first_after_h1), after
