"""The form generated models take: files, peft adapter folders or model folders, from what the run kept."""

import json

from rpgen.formats.output_forms import AdapterForm, FileForm, ModelFolderForm, keep_form, output_form


def test_the_run_keeps_the_form_of_its_first_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    keep_form(tmp_path / "0000.safetensors", run)  # a checkpoint file: nothing to keep
    assert isinstance(output_form(run), FileForm) and list(run.iterdir()) == []
    slot = FileForm().open(tmp_path, 3, ["a", "b"])
    assert slot.name == "0003.safetensors" and set(slot.files.values()) == {tmp_path / "0003.safetensors"}

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 2}))
    keep_form(adapter, run)
    assert isinstance(output_form(run), AdapterForm)
    out = tmp_path / "gen"
    out.mkdir()
    slot = output_form(run).open(out, 0, ["w"])
    assert slot.files == {"w": out / "0000" / "adapter_model.safetensors"}
    assert json.loads((out / "0000" / "adapter_config.json").read_text()) == {"r": 2}


def test_model_folders_keep_their_config(tmp_path):
    model, run, out = tmp_path / "m", tmp_path / "run", tmp_path / "gen"
    for folder in (model, run, out):
        folder.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    keep_form(model, run)
    form = output_form(run)
    assert isinstance(form, ModelFolderForm)
    slot = form.open(out, 1, ["w"])
    assert slot.files == {"w": out / "0001" / "model.safetensors"} and slot.metadata == {"format": "pt"}
    assert (out / "0001" / "config.json").is_file()


def test_side_files_are_never_copied_through_links_or_byte_for_byte(tmp_path):
    import os

    import pytest

    from rpgen.errors import RpgenError

    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"token": "outside the zoo"}))
    secret.chmod(0o600)
    model, run = tmp_path / "m", tmp_path / "run"
    for folder in (model, run):
        folder.mkdir()
    (model / "config.json").write_text('{"model_type":  "gpt2"}')
    (model / "generation_config.json").symlink_to(secret)
    with pytest.raises(RpgenError, match="generation_config.json: is a symbolic link"):
        keep_form(model, run)
    assert not (run / "generation_config.json").exists()
    (model / "generation_config.json").unlink()
    (model / "generation_config.json").write_bytes(b"\x00\x01 not json")
    with pytest.raises(RpgenError, match="generation_config.json: not valid JSON"):
        keep_form(model, run)
    (model / "generation_config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RpgenError, match="not valid JSON"):
        keep_form(model, run)
    (model / "generation_config.json").write_text('{"max_length": 8}')
    (model / "generation_config.json").chmod(0o600)
    keep_form(model, run)
    assert json.loads((run / "generation_config.json").read_text()) == {"max_length": 8}
    assert (run / "config.json").read_text() != (model / "config.json").read_text()  # written anew
    assert os.stat(run / "generation_config.json").st_mode & 0o044  # ordinary permissions
