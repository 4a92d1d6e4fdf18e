"""The tiny-gpt2 zoo: real transformers.Trainer checkpoint folders, reproducible, with its evaluator."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from rpgen.formats.checkpoints import load_state_dict
from rpgen.formats.listing import list_checkpoints
from rpgen.errors import RpgenError
from rpgen.zoo import tiny_gpt2
from rpgen.zoo.tiny_gpt2 import (
    LENGTH, SEP, SYMBOLS, TEST_SIZE, collect_tiny_gpt2, evaluate, make_sequences, test_sequences,
)

SMALL = {"num_checkpoints": 3, "pretrain_steps": 200, "save_steps": 4, "progress": False}


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_gpt2") / "zoo"
    return out, collect_tiny_gpt2(out, **SMALL)


def test_sequences_are_running_sums():
    ids = make_sequences(5, seed=3)
    assert ids.shape == (5, 2 * LENGTH + 2) and bool((ids[:, LENGTH + 1] == SEP).all())
    x, s = ids[:, 1:LENGTH + 1], ids[:, LENGTH + 2:]
    assert torch.equal(s, x.cumsum(dim=1) % SYMBOLS)
    assert torch.equal(make_sequences(5, seed=3), ids) and not torch.equal(make_sequences(5, seed=4), ids)


def test_held_out_sequences_are_never_trained_on():
    test = test_sequences()
    assert len(test) == TEST_SIZE and len({tuple(r) for r in test.tolist()}) == TEST_SIZE
    train = tiny_gpt2._TrainingSequences(20_000, seed=0).ids
    held = {tuple(r) for r in test[:, 1:LENGTH + 1].tolist()}
    assert not any(tuple(r) in held for r in train[:, 1:LENGTH + 1].tolist())


def test_trainer_checkpoint_folders(small_zoo):
    out, paths = small_zoo
    assert [p.name for p in paths] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    assert list_checkpoints(out) == paths  # by step
    for name in ("config.json", "generation_config.json", "model.safetensors", "optimizer.pt", "scheduler.pt",
                 "rng_state.pth", "trainer_state.json", "training_args.bin"):
        assert (paths[0] / name).is_file(), name
    assert json.loads((paths[0] / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in load_file(paths[0] / "model.safetensors")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".rpgen"]  # the checkpoints, its provenance
    model = transformers.AutoModelForCausalLM.from_pretrained(paths[-1])
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_evaluator_scores_training(small_zoo):
    _, paths = small_zoo
    scores = [evaluate(load_state_dict(p)) for p in paths]
    for s in scores:
        assert list(s) == ["accuracy", "per_example"] and len(s["per_example"]) == TEST_SIZE * LENGTH
        assert s["accuracy"] == pytest.approx(100 * sum(s["per_example"]) / len(s["per_example"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = transformers.GPT2LMHeadModel(tiny_gpt2.gpt2_config()).state_dict()
    random_init = evaluate({k: v for k, v in untrained.items() if k != "lm_head.weight"})
    assert scores[-1]["accuracy"] > random_init["accuracy"] + 10, (scores, random_init["accuracy"])


def test_same_seed_same_weights(tmp_path):
    tiny = {"num_checkpoints": 2, "pretrain_steps": 3, "save_steps": 2, "n_embd": 8, "progress": False}
    a, b = (collect_tiny_gpt2(tmp_path / name, **tiny) for name in ("a", "b"))
    c = collect_tiny_gpt2(tmp_path / "c", seed=1, **tiny)
    for x, y, z in zip(a, b, c):
        sx, sy, sz = load_state_dict(x), load_state_dict(y), load_state_dict(z)
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
        assert not torch.equal(sx["transformer.h.0.mlp.c_fc.weight"], sz["transformer.h.0.mlp.c_fc.weight"])


def test_evaluator_refuses_other_models():
    with pytest.raises(RpgenError, match="transformer.wte.weight"):
        evaluate({"fc.weight": torch.zeros(2, 2)})


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(RpgenError, match="num_checkpoints"):
        collect_tiny_gpt2(tmp_path / "z", num_checkpoints=1, progress=False)
    with pytest.raises(RpgenError, match="n_embd"):
        collect_tiny_gpt2(tmp_path / "z", n_embd=7, progress=False)
    assert not (tmp_path / "z").exists()
