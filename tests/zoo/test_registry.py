"""The zoo registry (``rpgen.zoo.registry``, re-exported by ``rpgen.zoo``): what ``rpgen collect``
lists, accepts and refuses."""

from __future__ import annotations

import importlib
import inspect

import pytest
from conftest import check_one_line_error, rpgen
from safetensors.torch import load_file

from rpgen.config import preset_names
from rpgen.errors import RpgenError
from rpgen.zoo import ZOOS, check_options, collect, get_zoo


def test_collect_help_lists_every_registered_zoo():
    result = rpgen("collect", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # undo the help's line wrapping
    for zoo in ZOOS.values():
        assert f"{zoo.name}: {zoo.description}." in text
    assert "Evaluate with --evaluator rpgen.zoo.digits:evaluate" in text


def test_train_help_lists_the_presets():
    text = "".join(rpgen("train", "--help").output.split())  # the wrapping may split "paper-vit-b"
    assert f"preset({','.join(preset_names())})" in text


@pytest.mark.parametrize("name", list(ZOOS))
def test_each_entry_matches_its_collect_function(name):
    """Specs resolve, the preset exists, and each option is a keyword of the collect function with the
    registry's default (so the CLI's defaults cannot drift from the library's)."""
    zoo = ZOOS[name]
    parameters = inspect.signature(zoo.collect_function()).parameters
    assert parameters["num_checkpoints"].default == zoo.default_num
    for option, default in zoo.options.items():
        assert parameters[option].kind is inspect.Parameter.KEYWORD_ONLY and parameters[option].default == default
    assert zoo.preset is None or zoo.preset in preset_names()
    if zoo.evaluator:
        module, _, function = zoo.evaluator.partition(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_unknown_zoo_is_a_one_line_error_naming_it(tmp_path):
    check_one_line_error(rpgen("collect", "cifar", "--out", tmp_path / "z"), "unknown zoo 'cifar'", *ZOOS)
    assert not (tmp_path / "z").exists()
    with pytest.raises(RpgenError, match="unknown zoo 'cifar'"):
        get_zoo("cifar")


@pytest.mark.parametrize(("zoo", "flag", "needles"), [
    ("digits", ("--rank", "16"), ("--rank applies to the minilm-sentiment zoo only", "digits takes --runs")),
    ("digits", ("--dora",), ("--dora applies to the minilm-sentiment zoo only",)),
    ("digits-tasks", ("--lora",), ("--dora applies to the minilm-sentiment zoo only", "digits-tasks takes --modes")),
    ("digits", ("--modes", "3"), ("--modes applies to the digits-tasks zoo only", "digits takes --runs")),
    ("minilm-sentiment", ("--runs", "2"), ("--runs applies to the digits zoo only",
                                           "minilm-sentiment takes --rank, --dora, --base")),
])
def test_an_option_the_zoo_does_not_take_is_a_one_line_error(tmp_path, zoo, flag, needles):
    check_one_line_error(rpgen("collect", zoo, *flag, "--out", tmp_path / "z"), *needles)
    assert not (tmp_path / "z").exists()


def test_check_options_fills_the_defaults():
    assert check_options(ZOOS["minilm-sentiment"], {"rank": 16}) == {"rank": 16, "dora": False, "base": None}
    assert check_options(ZOOS["digits-tasks"], {}) == {"modes": 1}


def test_collect_through_the_registry_writes_the_zoo_and_returns_the_message(tmp_path):
    message = collect("digits", tmp_path / "z", num=2, seed=0, runs=2, progress=False)
    z = tmp_path / "z"
    assert message == f"wrote 2 checkpoints of 2 training runs to {z}: train with `rpgen train {z} --out RUN`"
    names = sorted(p.name for p in (tmp_path / "z").glob("*.safetensors"))
    assert names == ["r00_0000.safetensors", "r01_0000.safetensors"]
    assert load_file(tmp_path / "z" / names[0]).keys() == load_file(tmp_path / "z" / names[1]).keys()
