"""dtype names as rpgen writes them, and back."""

import torch

from rpgen.formats.dtypes import dtype_from_name, dtype_name


def test_names_round_trip():
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool):
        assert dtype_from_name(dtype_name(dtype)) is dtype
    assert dtype_name(torch.float64) == "float64"
