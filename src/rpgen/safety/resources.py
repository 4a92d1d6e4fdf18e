"""RAM and disk checks before a long step starts: a clear error, not an OOM kill halfway.

The amounts come from the method's estimates (:mod:`rpgen.methods.memory`); where the available
memory or disk space cannot be read, the check is skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rpgen.errors import RpgenError

GB = 1e9


def available_memory() -> int | None:
    """Bytes of RAM available to a new allocation (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_resources(what: str, *, memory: int, disk: int = 0, disk_path: str | Path | None = None,
                    available: int | None = None, free: int | None = None) -> None:
    """Raise :class:`RpgenError` if ``memory`` bytes of RAM or ``disk`` bytes at ``disk_path`` are not there.

    ``available`` / ``free`` default to what the machine reports now.
    """
    available = available_memory() if available is None else available
    if available is not None and memory > available:
        raise RpgenError(f"{what}: needs about {size_text(memory)} of RAM, only {size_text(available)} "
                         "available; use a smaller model/batch (or sample.chunk_tokens), or a bigger machine")
    if disk and disk_path is not None:
        free = free_disk(disk_path) if free is None else free
        if free is not None and disk > free:
            raise RpgenError(f"{what}: needs about {size_text(disk)} of disk at {disk_path}, only "
                             f"{size_text(free)} free")


def size_text(num_bytes: int) -> str:
    """Bytes for people: "3.2 GB", "12.5 MB", "800 kB", "512 bytes" (decimal units, as ``GB``)."""
    for unit, scale in (("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if round(num_bytes / scale, 1) >= 1:  # 999,999,999 bytes is "1.0 GB", not "1000.0 MB"
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{int(num_bytes)} bytes"
