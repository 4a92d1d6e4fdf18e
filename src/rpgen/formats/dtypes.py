"""torch dtypes by name, as rpgen writes them into JSON and errors: ``float32``, ``bfloat16``, ``int64``."""

from __future__ import annotations

import torch


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32`` (the inverse of :func:`dtype_name`)."""
    return getattr(torch, name)
