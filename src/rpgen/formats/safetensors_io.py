"""safetensors files read and written piece by piece, so memory does not grow with file size.

The format (https://huggingface.co/docs/safetensors/index#format): an 8-byte little-endian
header size ``N``; ``N`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}`` (offsets relative to the end of the header); then the tensors'
raw little-endian bytes, back to back. :class:`SafetensorsReader` reads any element range of a
tensor with one ``readinto`` (no memory map, so reading does not grow the process's RSS);
:class:`SafetensorsWriter` writes the header first and then each tensor as it becomes
available. Files written here load with ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rpgen.errors import RpgenError, first_line

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100_000_000

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("rpgen's safetensors streaming assumes a little-endian machine")


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file; ``offset`` is absolute in the file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise ValueError("__metadata__ is not a mapping of strings to strings")
    return dict(value)


def _entry(name: str, spec: object, data_start: int) -> Entry:
    """One header entry, checked: a known dtype, a shape of non-negative integers, integer offsets
    ``0 <= begin <= end`` spanning exactly the shape's bytes."""
    if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
        dtype = spec.get("dtype") if isinstance(spec, dict) else spec
        raise ValueError(f"tensor {name!r} has unsupported dtype {dtype}")
    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise ValueError(f"tensor {name!r} has shape {shape}; expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets}; expected [begin, end], 0 <= begin <= end")
    entry = Entry(name, DTYPES[spec["dtype"]], tuple(shape), data_start + offsets[0])
    if offsets[1] - offsets[0] != entry.nbytes:
        raise ValueError(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape}")
    return entry


def _check_layout(entries: list[Entry], *, data_start: int, size: int) -> None:
    """The tensors' bytes lie back to back from the end of the header to the end of the file: no
    overlap, no gap, nothing after the last one (what the format requires)."""
    position = data_start
    for entry in sorted(entries, key=lambda e: (e.offset, e.nbytes)):
        if entry.offset != position:
            what = "overlaps the tensor before it" if entry.offset < position else "leaves a gap before it"
            raise ValueError(f"tensor {entry.name!r} starts at byte {entry.offset}: it {what}")
        position += entry.nbytes
    if position > size:
        raise ValueError(f"truncated: the tensors end at byte {position}, the file has {size}")
    if position < size:
        raise ValueError(f"{size - position} bytes after the last tensor (a corrupted file?)")


class SafetensorsReader:
    """Header of a safetensors file, and tensors or element ranges read on demand.

    Every problem (bad header, unknown dtype, truncated data) is an :class:`RpgenError` naming
    the file. The file stays open until :meth:`close` (or garbage collection).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - held open for later reads
            size = self.path.stat().st_size
            head = self._file.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header size")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise ValueError(f"header size {n} does not fit the file ({size} bytes)")
            header = json.loads(self._file.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            self.metadata: dict[str, str] = _metadata(header.pop("__metadata__", None))
            entries = [_entry(name, spec, 8 + n) for name, spec in header.items()]
            _check_layout(entries, data_start=8 + n, size=size)
        except RpgenError:
            raise
        except Exception as exc:  # any parse failure is the file's fault
            self.close()
            reason = first_line(exc, typed=False, limit=160)
            raise RpgenError(f"{self.path}: not a readable checkpoint ({reason})") from None
        entries.sort(key=lambda e: e.offset)
        self.entries: dict[str, Entry] = {e.name: e for e in entries}

    def read(self, name: str) -> Tensor:
        """The whole tensor ``name``, in its dtype and shape."""
        entry = self.entries[name]
        return self.read_flat(name, 0, entry.numel).reshape(entry.shape)

    def read_flat(self, name: str, start: int, stop: int) -> Tensor:
        """Elements ``start:stop`` of tensor ``name`` flattened, as a 1-D tensor."""
        entry = self.entries[name]
        size = _itemsize(entry.dtype)
        buf = torch.empty((stop - start) * size, dtype=torch.uint8)
        self._file.seek(entry.offset + start * size)
        if self._file.readinto(buf.numpy()) != buf.numel():
            raise RpgenError(f"{self.path}: truncated while reading {name!r}")
        return buf.view(entry.dtype)

    def close(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def __del__(self) -> None:
        self.close()


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, in file order; an :class:`RpgenError` naming the file if
    the header is unreadable or does not account for the file's size exactly (truncated or extended)."""
    reader = SafetensorsReader(path)  # checks that the tensors account for the file exactly
    try:
        return {name: reader.read(name) for name in reader.entries}
    finally:
        reader.close()


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, in the order the entries were declared.

    ``entries``: (name, dtype, shape) in file order. The header is written at once; each
    :meth:`write` appends the next tensor's bytes; :meth:`close` checks that all were written.
    """

    def __init__(self, path: str | Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], *,
                 metadata: dict[str, str] | None = None) -> None:
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        self._expected = []
        for name, dtype, shape in entries:
            nbytes = math.prod(shape) * _itemsize(dtype)
            header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            self._expected.append((name, dtype, tuple(shape)))
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the reference writer aligns the data to 8 bytes
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(struct.pack("<Q", len(text)) + text)
        self._next = 0

    def write(self, name: str, tensor: Tensor) -> None:
        want_name, dtype, shape = self._expected[self._next]
        if name != want_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"expected {want_name} {dtype} {list(shape)}, got {name} {tensor.dtype} "
                             f"{list(tensor.shape)}")
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        self._file.write(flat.view(torch.uint8).numpy().data)
        self._next += 1

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._expected):
            raise ValueError(f"only {self._next} of {len(self._expected)} tensors were written")
