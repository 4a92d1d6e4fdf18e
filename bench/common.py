"""Shared by the benchmark scripts (run as ``python bench/NAME.py``, so this folder is importable)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine() -> dict:
    """What the numbers were measured on: CPU model, cores, torch threads, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
