import pytest
import torch
from safetensors.torch import load_file, save_file

from rpgen.errors import RpgenError
from rpgen.formats.safetensors_io import SafetensorsReader, SafetensorsWriter


def tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 5, generator=g), "b": torch.randn(7, generator=g).to(torch.bfloat16),
            "n": torch.tensor(12, dtype=torch.int64), "d": torch.randn(2, 2, generator=g, dtype=torch.float64)}


def test_writer_output_loads_with_safetensors(tmp_path):
    sd = tensors()
    writer = SafetensorsWriter(tmp_path / "x.safetensors", [(k, v.dtype, tuple(v.shape)) for k, v in sd.items()],
                               metadata={"note": "hi"})
    for k, v in sd.items():
        writer.write(k, v)
    writer.close()
    loaded = load_file(tmp_path / "x.safetensors")
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert SafetensorsReader(tmp_path / "x.safetensors").metadata == {"note": "hi"}


def test_writer_refuses_out_of_order_and_missing_tensors(tmp_path):
    writer = SafetensorsWriter(tmp_path / "y.safetensors", [("a", torch.float32, (2,)), ("b", torch.float32, (1,))])
    with pytest.raises(ValueError, match="expected a"):
        writer.write("b", torch.zeros(1))
    writer.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="1 of 2"):
        writer.close()


def test_reader_reads_ranges_of_files_written_by_safetensors(tmp_path):
    sd = tensors()
    save_file(sd, tmp_path / "z.safetensors")
    reader = SafetensorsReader(tmp_path / "z.safetensors")
    for k, v in sd.items():
        assert torch.equal(reader.read(k), v)
    assert torch.equal(reader.read_flat("w", 4, 11), sd["w"].reshape(-1)[4:11])
    assert torch.equal(reader.read_flat("b", 6, 7), sd["b"][6:])


def test_reader_names_the_file_of_a_truncated_checkpoint(tmp_path):
    save_file(tensors(), tmp_path / "t.safetensors")
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-5])
    with pytest.raises(RpgenError, match=r"t\.safetensors.*truncated"):
        SafetensorsReader(tmp_path / "t.safetensors")
    (tmp_path / "t.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(RpgenError, match=r"t\.safetensors"):
        SafetensorsReader(tmp_path / "t.safetensors")


def _raw(path, header: dict, data: bytes) -> None:
    import json
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("header, data, needle", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8, "data_offsets \\[-8, 0\\]"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "'b' starts at byte .*overlaps"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "'a' starts at byte .*gap"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8 + b"junk", "4 bytes after the last"),
    ({"w": {"dtype": "F32", "shape": [8.5, 4], "data_offsets": [0, 136]}}, b"\0" * 136, "shape \\[8.5, 4\\]"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "shape \\[-1\\]"),
    ({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "unsupported dtype F8_E4M3"),
    ({"__metadata__": {"a": 1}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4,
     "__metadata__ is not a mapping"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
])
def test_reader_refuses_what_the_format_forbids(tmp_path, header, data, needle):
    path = tmp_path / "bad.safetensors"
    _raw(path, header, data)
    with pytest.raises(RpgenError, match=f"bad.safetensors: not a readable checkpoint \\(.*{needle}"):
        SafetensorsReader(path)


def test_reader_takes_empty_tensors_and_files(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(0), "b": torch.ones(3), "c": torch.zeros(2, 0)}, str(path))
    reader = SafetensorsReader(path)
    assert reader.read("b").tolist() == [1.0, 1.0, 1.0] and reader.read("c").shape == (2, 0)
    save_file({}, str(tmp_path / "empty.safetensors"))
    assert SafetensorsReader(tmp_path / "empty.safetensors").entries == {}
