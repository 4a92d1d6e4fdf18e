import json

import pytest
import torch
from torch import nn

from rpgen.data.tokenizer import Layout, TensorAssembler, fit_layout, flatten, tokenize, unflatten
from rpgen.errors import RpgenError


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)


def perturbed(module: nn.Module, n: int, *, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n state dicts of ``module`` with every float tensor (incl. BN buffers) jittered."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sd = {}
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                v = v + 0.1 * torch.randn(v.shape, generator=g)
                if k.endswith("running_var"):
                    v = v.abs() + 0.5
            sd[k] = v.clone()
        out.append(sd)
    return out


def detokenized(tokens: torch.Tensor, layout: Layout, reference: dict[str, torch.Tensor], *, chunk: int = 3
                ) -> dict[str, torch.Tensor]:
    """(L, S) tokens back to a state dict the way generation does it: a :class:`TensorAssembler` fed
    ``chunk`` tokens at a time (chunks cross tensors), copied tensors from ``reference``."""
    assembler, tensors = TensorAssembler(layout), {}
    for start in range(0, tokens.shape[0], chunk):
        tensors.update((info.name, tensor) for info, tensor in assembler.add(tokens[start:start + chunk]))
    return {t.name: tensors[t.name] if t.generated else reference[t.name].clone() for t in layout.tensors}


def assert_round_trip(state_dicts, token_size):
    layout = fit_layout(state_dicts, token_size=token_size)
    layout = Layout.from_json(layout.to_json())  # what a run directory stores
    for sd in state_dicts:
        back = detokenized(tokenize(sd, layout), layout, sd)
        assert list(back) == list(sd), "key order must be kept"
        for k, v in sd.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
            if v.is_floating_point():
                torch.testing.assert_close(back[k], v, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(back[k], v), k
    return layout


@pytest.mark.parametrize("token_size", [1, 7, 64, 4096])
def test_round_trip_cnn_with_batchnorm(token_size):
    torch.manual_seed(0)
    layout = assert_round_trip(perturbed(SmallCNN(), 4), token_size)
    assert [t.name for t in layout.tensors if not t.generated] == ["bn.num_batches_tracked"]
    assert [t.name for t in layout.tensors if t.log] == ["bn.running_var"]


def test_round_trip_mlp_and_transformer_layer():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 10))
    assert_round_trip(perturbed(mlp, 3), 16)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    assert_round_trip(perturbed(layer, 3, seed=1), 100)


def test_zero_dim_small_and_large_tensors_and_float64():
    g = torch.Generator().manual_seed(0)
    sds = [{"scale": torch.randn((), generator=g), "tiny": torch.randn(3, generator=g),
            "big": torch.randn(50, 40, generator=g), "double": torch.randn(5, dtype=torch.float64, generator=g),
            "half": torch.randn(9, generator=g).half(), "step": torch.tensor(7)} for _ in range(3)]
    layout = assert_round_trip(sds, 16)
    # 0-dim and 3-value tensors are one padded token each; 2000 values are 125 tokens.
    assert [t.num_tokens(16) for t in layout.tensors] == [1, 1, 125, 1, 1, 0]
    assert layout.num_tokens == 129


def test_tokens_never_cross_tensors_and_padding_is_nan():
    sds = [{"a": torch.arange(5.0) + i, "b": torch.arange(3.0) * (i + 1)} for i in range(2)]
    layout = fit_layout(sds, token_size=4)
    tokens = tokenize(sds[0], layout)
    assert tokens.shape == (3, 4)  # a: 2 tokens (5 values), b: 1 token (3 values)
    assert torch.isnan(tokens[1, 1:]).all() and not torch.isnan(tokens[1, 0])
    assert torch.isnan(tokens[2, 3]) and not torch.isnan(tokens[2, :3]).any()
    assert layout.positions().tolist() == [[0, 0], [0, 1], [1, 0]]


def test_statistics_are_over_the_whole_checkpoint_set():
    sds = [{"w": torch.full((10,), float(i))} for i in range(4)]  # values 0, 1, 2, 3
    (info,) = fit_layout(sds, token_size=8).tensors
    assert info.mean == pytest.approx(1.5)
    assert info.std == pytest.approx(torch.tensor([0.0, 1, 2, 3]).std(unbiased=False).item())
    tokens = tokenize(sds[3], fit_layout(sds, token_size=8))
    assert torch.allclose(tokens[0], torch.full((8,), (3 - 1.5) / info.std))


def test_constant_tensor_survives():
    sds = [{"c": torch.full((4,), 2.5), "w": torch.randn(4)} for _ in range(3)]
    layout = fit_layout(sds, token_size=4)
    back = detokenized(tokenize(sds[0], layout), layout, sds[0], chunk=1)
    assert torch.equal(back["c"], sds[0]["c"])


def test_running_var_is_normalised_in_log_space():
    sds = [{"bn.running_var": torch.tensor([1e-4, 1.0, 1e4]) * (1 + 0.1 * i)} for i in range(3)]
    (info,) = fit_layout(sds, token_size=4).tensors
    assert info.log
    assert abs(info.mean) < 1.0  # mean of log values, not of the raw ones (which is ~3700)


def test_layout_json_is_plain_json():
    layout = fit_layout([{"w": torch.randn(3)}, {"w": torch.randn(3)}], token_size=2)
    data = json.loads(layout.to_json())
    assert data["tensors"][0]["name"] == "w" and data["token_size"] == 2


def test_bad_inputs():
    with pytest.raises(RpgenError, match="token_size"):
        fit_layout([{"w": torch.randn(3)}], token_size=0)
    with pytest.raises(RpgenError, match="floating-point"):
        fit_layout([{"step": torch.tensor(1)}], token_size=4)


def test_flatten_matches_tokens_and_round_trips():
    state_dicts = perturbed(SmallCNN(), 4)
    layout = fit_layout(state_dicts, token_size=5)
    for sd in state_dicts:
        vector = flatten(sd, layout)
        tokens = tokenize(sd, layout)
        assert vector.shape == (layout.num_params,)
        torch.testing.assert_close(vector, tokens[~torch.isnan(tokens)])
        back = unflatten(vector, layout, sd)
        assert list(back) == list(sd)
        for k, v in sd.items():
            torch.testing.assert_close(back[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(RpgenError, match="expected a vector of"):
        unflatten(torch.zeros(3), layout, state_dicts[0])


def test_the_assembler_returns_each_tensor_once_its_last_token_is_in():
    state_dicts = perturbed(SmallCNN(), 2)
    layout = fit_layout(state_dicts, token_size=4)
    tokens = tokenize(state_dicts[0], layout)
    assembler = TensorAssembler(layout)
    (first, sl), *_ = layout.token_slices()
    assert assembler.add(tokens[:sl.stop - 1]) == []  # one token short of the first tensor
    done = assembler.add(tokens[sl.stop - 1:sl.stop])
    assert [info.name for info, _ in done] == [first.name]
    rest = assembler.add(tokens[sl.stop:])
    assert [info.name for info, _ in rest] == [info.name for info in layout.generated[1:]]


@pytest.mark.parametrize("center", ["element", "base"])
def test_a_per_element_centre_round_trips_and_leaves_only_the_deviations(center):
    state_dicts = perturbed(SmallCNN(), 4)
    base = perturbed(SmallCNN(), 1, seed=9)[0] if center == "base" else None
    layout = fit_layout(state_dicts, token_size=5, center=center, base=base)
    assert layout.center == center and set(layout.centers) == {t.name for t in layout.generated}
    stored = Layout.from_json(layout.to_json())  # the JSON names the centre; the tensors are stored apart
    assert stored.center == center and stored.centers is None
    stored = stored.with_centers(layout.centers)
    for sd in state_dicts:
        back = detokenized(tokenize(sd, stored), stored, sd)
        for k, v in sd.items():
            torch.testing.assert_close(back[k], v, rtol=1e-5, atol=1e-6)
    if center == "element":  # the mean checkpoint is the centre: its tokens are all zero
        mean = {k: torch.stack([sd[k] for sd in state_dicts]).double().mean(0).to(v.dtype)
                for k, v in state_dicts[0].items()}
        mean["bn.running_var"] = torch.stack([sd["bn.running_var"] for sd in state_dicts]).log().mean(0).exp()
        tokens = tokenize(mean, stored)
        assert tokens[~tokens.isnan()].abs().max() < 1e-4
    x = torch.stack([flatten(sd, stored) for sd in state_dicts])  # (K, P): unit variance over the set
    assert x.std(unbiased=False).item() == pytest.approx(1.0, abs=0.35)


def test_a_base_model_must_match_the_checkpoints():
    state_dicts = perturbed(SmallCNN(), 2)
    base = dict(state_dicts[0])
    base["fc.weight"] = torch.zeros(3, 5)
    with pytest.raises(RpgenError, match="base model's tensor 'fc.weight' has shape \\[3, 5\\]"):
        fit_layout(state_dicts, token_size=5, center="base", base=base)
    del base["fc.weight"]
    with pytest.raises(RpgenError, match="base model has no tensor 'fc.weight'"):
        fit_layout(state_dicts, token_size=5, center="base", base=base)
    with pytest.raises(RpgenError, match="the centre tensors do not match the layout: tensor 'fc.bias'"):
        layout = fit_layout(state_dicts, token_size=5, center="element")
        layout.with_centers({k: v for k, v in layout.centers.items() if k != "fc.bias"})
