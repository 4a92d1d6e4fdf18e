"""Permutation spec files: round trip and one-line errors naming the key."""

from __future__ import annotations

import json

import pytest
from traced_models import ConvFlattenMLP

from rpgen.align import load_spec, save_spec, spec_from_model
from rpgen.errors import RpgenError
from rpgen.zoo.digits import DigitsCNN


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
