"""Alignment by weight matching: permutations that keep the function, found back exactly; spec files;
refusals; a real two-run digits folder aligned on disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rpgen.align import (
    align_checkpoints,
    check_matches,
    interpolate,
    load_model_factory,
    load_spec,
    permute,
    save_spec,
    spec_from_model,
    weight_distance,
    weight_matching,
)
from rpgen.formats.checkpoints import save_state_dict
from rpgen.errors import RpgenError
from rpgen.zoo.digits import DigitsCNN, collect_digits, load_split


class ResidualMLP(nn.Module):
    """Linear in, two ``x + relu(fc(ln(x)))`` blocks, LayerNorm, a GELU MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.ln = nn.ModuleList(nn.LayerNorm(8) for _ in range(2))
        self.fc = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.norm = nn.LayerNorm(8)
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # (B, 8)
        for ln, fc in zip(self.ln, self.fc):
            h = h + F.relu(fc(ln(h)))  # (B, 8)
        return self.out(F.gelu(self.hidden(self.norm(h))))  # (B, 3)


class ConvFlattenMLP(nn.Module):
    """conv(1->4) on 6x6 -> ReLU -> flatten (4 x 16) -> Linear(64, 16) -> ReLU -> dropout -> Linear(16, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(64, 16)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(F.relu(self.conv(x)), 1)  # (B, 4 * 4 * 4)
        return self.fc2(self.drop(F.relu(self.fc1(h))))  # (B, 5)


class EmbeddingModel(nn.Module):
    """Embedding(20, 8) -> Linear(8, 12) -> tanh -> mean over the sequence -> Linear(12, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(self.embed(tokens)))  # (B, L, 12)
        return self.head(h.mean(dim=1))  # (B, 4)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, 8)
        return torch.matmul(self.q(x), self.k(x).transpose(1, 2))  # (B, L, L)


class TorchAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.attn(h, h, h)[0]


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Generator], torch.Tensor]]] = {
    "digits": (DigitsCNN, lambda g: torch.rand(4, 1, 8, 8, generator=g)),
    "residual": (ResidualMLP, lambda g: torch.randn(5, 6, generator=g)),
    "conv-flatten": (ConvFlattenMLP, lambda g: torch.randn(3, 1, 6, 6, generator=g)),
    "embedding": (EmbeddingModel, lambda g: torch.randint(20, (3, 5), generator=g)),
}


def random_model(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model of ``MODELS[name]`` with random weights and BatchNorm statistics, in eval mode, and an input."""
    factory, make_input = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    model = factory().eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=g))
                if key.endswith("running_var"):
                    tensor.abs_().add_(0.5)
    return model, make_input(g)


def random_perms(spec, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(size, generator=g) for name, size in spec.groups.items()}


def run(factory: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    model = factory().eval()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return model(x)


# --- derived specs -------------------------------------------------------------------------------


def test_digits_spec_groups_and_fixed_output():
    spec = spec_from_model(DigitsCNN())
    assert spec.groups == {"P1": 8, "P2": 16, "P3": 32}
    assert [(a.axis, a.group) for a in spec.axes["conv2.weight"]] == [(1, "P1"), (0, "P2")]
    assert [a.group for a in spec.axes["bn3.running_var"]] == ["P3"]
    assert [(a.axis, a.group) for a in spec.axes["fc.weight"]] == [(1, "P3")]  # its outputs are the model's
    assert "fc.bias" not in spec.axes and "bn1.num_batches_tracked" not in spec.axes
    assert spec_from_model(DigitsCNN(), torch.zeros(2, 1, 8, 8)) == spec


def test_residual_sum_shares_one_group_and_flatten_has_a_block():
    spec = spec_from_model(ResidualMLP())
    stream = spec.axes["inp.weight"][0].group
    assert {a.group for a in spec.axes["fc.1.weight"]} == {stream} and spec.groups[stream] == 8
    assert [a.group for a in spec.axes["norm.weight"]] == [stream]
    assert len(spec.groups) == 2  # the residual stream and the head's hidden layer
    flat = spec_from_model(ConvFlattenMLP(), torch.zeros(1, 1, 6, 6))
    assert [(a.axis, a.block) for a in flat.axes["fc1.weight"]] == [(1, 16), (0, 1)]
    assert spec_from_model(ConvFlattenMLP()) == flat  # the block also follows from fc1's input size


@pytest.mark.parametrize("name", MODELS)
def test_permutation_keeps_the_function_and_weight_matching_finds_it_back(name):
    factory = MODELS[name][0]
    model, x = random_model(name)
    spec = spec_from_model(model, x)
    original = model.state_dict()
    permuted = permute(original, spec, random_perms(spec))
    assert any(not torch.equal(permuted[k], original[k]) for k in spec.axes)
    for key, tensor in permuted.items():
        assert tensor.dtype == original[key].dtype and tensor.is_contiguous()
    assert torch.allclose(run(factory, permuted, x), run(factory, original, x), atol=1e-5)

    found = weight_matching(original, permuted, spec)
    restored = permute(permuted, spec, found)
    assert all(torch.equal(restored[k], original[k]) for k in original)


@pytest.mark.parametrize(
    ("model", "example", "node"),
    [(Attention(), None, "node 'transpose' (call_method transpose)"),
     (TorchAttention(), None, "node 'attn' (call_module attn: MultiheadAttention)")],
)
def test_models_mixing_hidden_units_are_refused_naming_the_node(model, example, node):
    with pytest.raises(RpgenError, match="cannot derive permutation groups") as exc:
        spec_from_model(model, example)
    message = str(exc.value)
    assert node in message and "write a spec file" in message and "\n" not in message


def test_matmul_between_activations_is_refused():
    class Gram(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(self.a(x), self.b(x))  # (B, 6, 6) @ (B, 6, 6), both hidden

    with pytest.raises(RpgenError, match=r"node 'matmul' \(call_function torch.matmul\) mixes hidden units"):
        spec_from_model(Gram())


# --- spec files ----------------------------------------------------------------------------------


def test_spec_file_round_trip(tmp_path):
    spec = spec_from_model(ConvFlattenMLP())
    save_spec(spec, tmp_path / "spec.json")
    data = json.loads((tmp_path / "spec.json").read_text())
    assert ["fc1.weight", 1, 16] in data["groups"]["P1"] and ["conv.weight", 0] in data["groups"]["P1"]
    assert load_spec(tmp_path / "spec.json", ConvFlattenMLP().state_dict()) == spec


@pytest.mark.parametrize(
    ("entry", "needles"),
    [(["conv9.weight", 0], ["conv9.weight", "does not hold"]),
     (["bn1.bias", 1], ["bn1.bias", "axis 1", "1 axes"]),
     (["conv2.weight", 0], ["conv2.weight", "16 units", "8 at key 'conv1.weight'"]),
     (["conv1.weight", "0"], ["[key, axis]"])],
)
def test_bad_spec_files_are_one_line_errors_naming_the_key(tmp_path, entry, needles):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"groups": {"P1": [["conv1.weight", 0], entry]}}))
    with pytest.raises(RpgenError) as exc:
        load_spec(path, DigitsCNN().state_dict())
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, message


# --- model factories -----------------------------------------------------------------------------

FACTORIES = """
import torch
from rpgen.zoo.digits import DigitsCNN

def good():
    return DigitsCNN()

def boom():
    raise ValueError("no weights here\\nsecond line")

def number():
    return 3
"""


def test_model_factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    assert isinstance(load_model_factory(f"{path}:good"), DigitsCNN)
    assert isinstance(load_model_factory("rpgen.zoo.digits:DigitsCNN"), DigitsCNN)
    for spec, needle in [(f"{path}:boom", "raised ValueError: no weights here"),
                         (f"{path}:number", "returned a int, not a torch.nn.Module"),
                         (f"{path}:missing", "has no attribute 'missing'"),
                         ("rpgen.zoo.digits", "must look like")]:
        with pytest.raises(RpgenError, match="model factory") as exc:
            load_model_factory(spec)
        assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_check_matches_names_the_first_differing_key():
    model, state_dict = DigitsCNN(), DigitsCNN().state_dict()
    check_matches(model, state_dict, "ok.safetensors")
    cases = [({k: v for k, v in state_dict.items() if k != "bn2.bias"}, "key 'bn2.bias', which the checkpoint"),
             ({**state_dict, "extra": torch.zeros(1)}, "key 'extra', which the model does not"),
             ({**state_dict, "fc.bias": torch.zeros(11)}, "key 'fc.bias' has shape [11]")]
    for bad, needle in cases:
        with pytest.raises(RpgenError, match="bad.safetensors") as exc:
            check_matches(model, bad, "bad.safetensors")
        assert needle in str(exc.value) and "\n" not in str(exc.value)


# --- two real training runs ----------------------------------------------------------------------


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
    assert sorted(p.name for p in (tmp_path / "aligned").iterdir()) == ["align.json", *names]
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


def test_interpolate_blends_floats_and_keeps_counters(make_state_dict):
    a, b = make_state_dict(0), make_state_dict(1)
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid["bn.running_var"], (a["bn.running_var"] + b["bn.running_var"]) / 2)
    assert torch.equal(mid["bn.num_batches_tracked"], a["bn.num_batches_tracked"])
    assert all(torch.equal(interpolate(a, b, 1.0)[k], b[k]) for k in a if a[k].is_floating_point())


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
    align_checkpoints(zoo, tmp_path / "a", spec_from_model(DigitsCNN()), runs=[0, 0, 1, 1], progress=False)
    aligned = [load_file(p) for p in sorted((tmp_path / "a").glob("*.safetensors"))]
    for a, b in ((0, 1), (2, 3)):  # one permutation per run keeps the distance between its epochs
        assert weight_distance(aligned[a], aligned[b]) == pytest.approx(weight_distance(originals[a], originals[b]))
    assert all(torch.equal(aligned[1][k], originals[1][k]) for k in originals[1])  # the reference's run stays
    assert weight_distance(aligned[2], aligned[0]) < weight_distance(originals[2], originals[0])
