"""The evaluator contract: loading a spec, calling it with one or two arguments, checking its output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rpgen.errors import RpgenError
from rpgen.evaluation.evaluator import higher_is_better, load_evaluator, run_evaluator, takes_path
from rpgen.zoo.digits import evaluate as digits_evaluate

EVALUATOR_FILE = '''
import torch

def score(state_dict):
    """Sum of all floating values, then a constant second metric."""
    total = sum(float(v.sum()) for v in state_dict.values() if v.is_floating_point())
    return {"total": total, "const": 1}

NOT_CALLABLE = 3
'''


@pytest.fixture
def evaluator_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_eval.py"
    path.write_text(EVALUATOR_FILE)
    return path


# --- load_evaluator ------------------------------------------------------------------------------


def test_load_evaluator_file_and_module_forms(evaluator_file, make_state_dict):
    fn = load_evaluator(f"{evaluator_file}:score")
    sd = make_state_dict(0)
    expected = sum(float(v.sum()) for v in sd.values() if v.is_floating_point())
    assert fn(sd)["total"] == pytest.approx(expected)
    assert load_evaluator("rpgen.zoo.digits:evaluate") is digits_evaluate


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("rpgen.zoo.digits", "must look like"),
        ("rpgen.zoo.digits:", "must look like"),
        ("{tmp}/missing.py:score", "missing.py not found"),
        ("no_such_module_xyz:evaluate", "module 'no_such_module_xyz' is not importable"),
        ("rpgen.zoo.digits:nope", "has no attribute 'nope'"),
        ("{file}:nope", "has no attribute 'nope'"),
        ("{file}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a function"),
        ("{broken}:f", "raised ZeroDivisionError"),
    ],
)
def test_load_evaluator_bad_specs(tmp_path, evaluator_file, spec, pattern):
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1 / 0\n")
    spec = spec.format(tmp=tmp_path, file=evaluator_file, broken=broken)
    with pytest.raises(RpgenError, match=pattern) as exc:
        load_evaluator(spec)
    assert "\n" not in str(exc.value)


# --- run_evaluator -------------------------------------------------------------------------------


def test_run_evaluator_converts_numbers_and_keeps_order():
    result = run_evaluator(
        lambda sd: {"acc": torch.tensor(0.5), "n": 3, "np": np.float32(1.5), "nan_ok": float("nan"),
                    "arr": np.array(2.0)},
        {},
        name="m.safetensors",
    ).metrics
    assert list(result) == ["acc", "n", "np", "nan_ok", "arr"]
    assert result["acc"] == 0.5 and result["n"] == 3.0 and result["np"] == 1.5 and result["arr"] == 2.0
    assert all(type(v) is float for v in result.values())
    assert np.isnan(result["nan_ok"])


def raises_value_error(state_dict):
    raise ValueError("boom")


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (raises_value_error, "evaluator raised on m.safetensors: ValueError: boom"),
        (lambda sd: sys.exit(0), r"evaluator called sys.exit\(0\) on m.safetensors"),
        (lambda sd: sys.exit(3), r"evaluator called sys.exit\(3\)"),
        (lambda sd: {"acc": "high"}, "evaluator returned str for 'acc' on m.safetensors"),
        (lambda sd: {"acc": True}, "returned bool for 'acc'"),
        (lambda sd: {"acc": torch.ones(2)}, "returned Tensor for 'acc'"),
        (lambda sd: {"acc": None}, "returned NoneType for 'acc'"),
        (lambda sd: {}, "non-empty dict"),
        (lambda sd: 0.9, "returned float 0.9 on m.safetensors"),
        (lambda sd: {1: 0.5}, "non-string key 1"),
    ],
)
def test_run_evaluator_errors(fn, pattern):
    with pytest.raises(RpgenError, match=pattern):
        run_evaluator(fn, {}, name="m.safetensors")


def test_higher_is_better():
    assert higher_is_better("accuracy") and higher_is_better("f1")
    assert not higher_is_better("val_loss") and not higher_is_better("Test Error")


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (lambda sd: {"acc": 1.0, "per_example": "yes"}, r"'per_example' on .* as str; expected a 1-D list"),
        (lambda sd: {"acc": 1.0, "per_example": [[True]]}, r"'per_example' on .* with shape \[1, 1\]"),
        (lambda sd: {"acc": 1.0, "per_example": []}, r"with shape \[0\]"),
        (lambda sd: {"acc": 1.0, "per_example": [0, 2]}, "values that are not booleans"),
        (lambda sd: {"acc": 1.0, "per_example": ["a", "b"]}, "values that are not booleans"),
        (lambda sd: {"acc": 1.0, "per_example": 5}, "as int; expected a 1-D list"),
        (lambda sd: {"per_example": [True]}, "returned no metric on .*, only 'per_example'"),
    ],
)
def test_per_example_bad_types(fn, pattern):
    with pytest.raises(RpgenError, match=pattern):
        run_evaluator(fn, {}, name="m.safetensors")


# --- the optional second argument: the model's file or folder ----------------------------------


def one_arg(state_dict):
    return {"n": len(state_dict)}


def two_args(state_dict, path):
    return {"n": len(state_dict), "has_path": float(path is not None)}


def path_with_default(state_dict, path=None):
    return {"n": len(state_dict), "has_path": float(path is not None)}


class CallableEvaluator:
    def __call__(self, state_dict, path):
        return {"n": len(state_dict), "has_path": float(path is not None)}


@pytest.mark.parametrize(
    ("fn", "expected"),
    [(one_arg, False), (two_args, True), (path_with_default, True), (CallableEvaluator(), True),
     (lambda sd: {"n": 1}, False), (lambda sd, *rest: {"n": 1}, True), (lambda sd, *, option=1: {"n": 1}, False),
     (digits_evaluate, False)],
)
def test_takes_path_follows_the_signature(fn, expected):
    assert takes_path(fn) is expected


def test_run_evaluator_passes_the_path_only_to_two_argument_evaluators(tmp_path):
    state_dict = {"w": torch.zeros(2)}
    model = tmp_path / "0000.safetensors"
    assert run_evaluator(one_arg, state_dict, name="m", path=model).metrics == {"n": 1.0}
    for fn in (two_args, path_with_default, CallableEvaluator()):
        assert run_evaluator(fn, state_dict, name="m", path=model).metrics == {"n": 1.0, "has_path": 1.0}
        assert run_evaluator(fn, state_dict, name="baseline noise_1 #0").metrics["has_path"] == 0.0  # path None
    seen = []
    run_evaluator(lambda sd, path: seen.append(path) or {"n": 1}, state_dict, name="m", path=model)
    assert seen == [model]
