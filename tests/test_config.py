import pytest

from rpgen.config import Config, apply_overrides, from_dict, load_toml
from rpgen.errors import RpgenError


def test_defaults_round_trip_through_toml(tmp_path):
    config = apply_overrides(Config(), ["train.steps=123", "model.backbone=lstm", "model.denoiser_channels=[1, 8, 1]"])
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert load_toml(path) == config


def test_overrides_are_typed():
    config = apply_overrides(Config(), ["train.lr=1e-3", "train.steps=10", "model.causal=false",
                                        "diffusion.prediction=epsilon", "sample.sampler=dpm"])
    assert config.train.lr == 1e-3 and config.train.steps == 10 and config.model.causal is False
    assert config.diffusion.prediction == "epsilon" and config.sample.sampler == "dpm"
    assert apply_overrides(Config(), ["train.lr=1"]).train.lr == 1.0  # int accepted for float


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown key train.nope"),
    ("nope.steps=1", r"unknown section \[nope\]"),
    ("train.steps=abc", "train.steps = 'abc' must be an integer"),
    ("train.steps=1.5", "train.steps = 1.5 must be an integer"),
    ("train.lr=fast", "train.lr = 'fast' must be a number"),
    ("model.backbone=rnn", "model.backbone = 'rnn' is not one of"),
    ("model.causal=1", "model.causal = 1 must be true or false"),
    ("train.steps=-1", "train.steps = -1 must be >= 1, or 0 \\(auto\\)"),
    ("train.lr=-0.1", "train.lr = -0.1 must be > 0, or 0 \\(auto\\)"),
    ("model.d_model=3", "model.d_model = 3 must be even and >= 2, or 0 \\(auto\\)"),
    ("sample.temperature=hot", "sample.temperature = 'hot' must be a number or 'auto'"),
    ("sample.temperature=-1", "sample.temperature = -1.0 must be a finite number >= 0 or 'auto'"),
    ("sample.temperature=inf", "sample.temperature = inf must be a finite number"),
    ("model.denoiser_channels=[1, 8, 2]", "model.denoiser_channels"),
    ("model.denoiser_channels=[1, 0, 1]", "every width >= 1"),
    ("model.kernel_size=-1", "model.kernel_size = -1 must be odd and >= 1"),
    ("model.num_heads=0", "model.num_heads = 0 must be >= 1"),
    ("model.expand=0", "model.expand = 0 must be >= 1"),
    ("model.d_conv=0", "model.d_conv = 0 must be >= 1"),
    ("train.weight_decay=nan", "train.weight_decay = nan must be a finite number >= 0"),
    ("train.grad_clip=0", "train.grad_clip = 0.0 must be a finite number > 0"),
    ("train.seed=9223372036854775808", r"train.seed = 9223372036854775808 must be between 0 and 2\*\*63 - 1"),
    ("diffusion.num_train_timesteps=1000000000", "must be between 2 and 100,000"),
    ("sample.steps=5000", r"sample.steps = 5000 must be at most diffusion.num_train_timesteps \(1000\)"),
    ("steps=5", "expected section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RpgenError, match=message):
        apply_overrides(Config(), [override])


def test_bad_toml_files(tmp_path):
    with pytest.raises(RpgenError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(RpgenError, match="invalid TOML"):
        load_toml(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nstepz = 3\n")
    with pytest.raises(RpgenError, match=f"{typo}: unknown key train.stepz"):
        load_toml(typo)


def test_from_dict_keeps_base_values():
    base = apply_overrides(Config(), ["train.steps=7"])
    assert from_dict({"train": {"lr": 0.5}}, base=base).train.steps == 7


def test_temperature_is_a_number_or_auto():
    assert Config().sample.temperature == "auto"
    assert apply_overrides(Config(), ["sample.temperature=0"]).sample.temperature == 0.0
    config = apply_overrides(Config(), ["sample.temperature=0.5"])
    assert config.sample.temperature == 0.5
    assert apply_overrides(config, ["sample.temperature=auto"]).sample.temperature == "auto"
