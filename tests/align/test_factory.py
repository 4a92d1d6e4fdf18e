"""Model factories named by a spec, and the check that a model matches a checkpoint."""

from __future__ import annotations

import pytest
import torch

from rpgen.align import check_matches, load_model_factory
from rpgen.errors import RpgenError
from rpgen.zoo.digits import DigitsCNN

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
