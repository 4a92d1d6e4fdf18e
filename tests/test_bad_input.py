"""Bad, careless or hostile input through the CLI (issue 15): one place that lists every case.

Bars for every case: exit status != 0 (or a correct result), no Python traceback, at most 3 lines
on stderr, no input deleted, no output left that looks complete. Add new cases here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, check_one_line_error, child_env, rpgen, set_args, start_python, tiny
from safetensors.torch import load_file, save_file

from rpgen.config import Config, apply_overrides, load_toml
from rpgen.errors import RpgenError
from rpgen.safety.resources import check_resources
from rpgen.training import train


HOLD_LOCK = """
import sys, time
from rpgen.safety.locks import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


# ----------------------------------------------------------------------------------------- helpers

def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``: proves an input was not touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``rpgen ARGS`` in a real child process."""
    return subprocess.run([sys.executable, "-m", "rpgen.cli", *map(str, args)], env=child_env(), text=True,
                          capture_output=True, timeout=timeout)


def check_refused(proc: subprocess.CompletedProcess, *needles) -> None:
    """A child's failure meets the bars: exit != 0, no traceback, <= 3 stderr lines, naming ``needles``."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    for needle in needles:
        assert str(needle) in proc.stderr, (needle, proc.stderr)


def no_models(folder: Path) -> bool:
    """Nothing at ``folder`` that looks like a finished output."""
    return not folder.exists() and not list(folder.parent.glob(f"{folder.name}*"))


@pytest.fixture
def zoo(digits_zoo, tmp_path) -> Path:
    """A writable copy of the session's digits zoo, in ``tmp_path/data/zoo``."""
    return Path(shutil.copytree(digits_zoo, tmp_path / "data" / "zoo"))


@pytest.fixture(scope="module")
def finished_run(digits_zoo, tmp_path_factory) -> Path:
    """A tiny finished run (read-only: copy it with ``copy_run`` before changing anything)."""
    out = tmp_path_factory.mktemp("bad_input") / "run"
    train(digits_zoo, out, apply_overrides(Config(), list(TINY)), progress=False)
    return out


@pytest.fixture(scope="module")
def stopped_run(digits_zoo, tmp_path_factory) -> Path:
    """A tiny run stopped after 7 of 12 steps with a resumable state (read-only)."""
    out = tmp_path_factory.mktemp("bad_input") / "stopped"
    train(digits_zoo, out, apply_overrides(Config(), list(TINY)), progress=False, stop_after=7)
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


# ------------------------------------------------------------- outputs that overlap their inputs

@pytest.mark.parametrize("out, relation", [
    ("{zoo}", "is the checkpoint folder"),
    ("{zoo}/../zoo", "is the checkpoint folder"),
    ("{zoo}/run", "is inside the checkpoint folder"),
    ("{parent}", "contains the checkpoint folder"),
    ("{link}", "is the checkpoint folder"),
])
def test_train_never_writes_over_its_checkpoints(zoo, out, relation):
    link = zoo.parent.parent / "link"
    link.symlink_to(zoo)
    before = snapshot(zoo)
    out = out.format(zoo=zoo, parent=zoo.parent, link=link)
    for extra in ([], ["--overwrite"]):
        check_one_line_error(rpgen("train", zoo, "--out", out, *extra, *set_args()), relation)
    assert snapshot(zoo) == before


@pytest.mark.parametrize("where, relation", [
    ("run", "is the run directory"), ("run/gen", "is inside the run directory"), (".", "contains the run directory"),
])
def test_generate_never_writes_over_its_run(finished_run, tmp_path, where, relation):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    out = tmp_path / where
    check_one_line_error(rpgen("generate", run, "--num", 1, "--out", out, "--overwrite"), relation)
    assert snapshot(run) == before


# ------------------------------------------------------------- --overwrite replaces rpgen outputs only

def _user_folder(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    return mine


@pytest.mark.parametrize("command", [
    ["train", "{zoo}", *set_args()], ["generate", "{run}", "--num", "1"], ["collect", "digits", "--num", "2"],
    ["collect", "digits-tasks"], ["quickstart"],
])
def test_overwrite_refuses_a_folder_rpgen_did_not_write(zoo, finished_run, tmp_path, command):
    mine = _user_folder(tmp_path)
    args = [a.format(zoo=zoo, run=finished_run) for a in command]
    check_one_line_error(rpgen(*args, "--out", mine, "--overwrite", "--no-progress"), mine, "not written by rpgen")
    assert (mine / "thesis.tex").read_text() == "years of work"


def _folders_with_rpgen_names(tmp_path: Path) -> list[Path]:
    """Folders holding names rpgen writes, but written by the user (issue: each was deleted)."""
    cases = {"notes": {"report.md": "notes"}, "project": {"config.toml": "", "run.json": "{}", "src/main.py": "x"},
             "draft": {".draft.tmp": "x"}, "partial": {".x.partial/keep.txt": "x"},
             "beside": {"generation.json": "{}", "precious.txt": "x"}}
    folders = []
    for name, files in cases.items():
        for rel, text in files.items():
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / rel).write_text(text)
        folders.append(tmp_path / name)
    return folders


def test_overwrite_refuses_folders_that_only_look_like_rpgen_outputs(finished_run, tmp_path):
    for folder in _folders_with_rpgen_names(tmp_path):
        before = snapshot(folder)
        check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", folder, "--overwrite"),
                             "not written by rpgen")
        assert snapshot(folder) == before, folder


def test_overwrite_keeps_a_file_added_to_generated_models(finished_run, tmp_path):
    out = tmp_path / "gen"
    assert rpgen("generate", finished_run, "--num", 1, "--out", out, "--no-progress").exit_code == 0
    (out / "precious.txt").write_text("mine")
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", out, "--overwrite"),
                         "not written by rpgen")
    assert (out / "precious.txt").read_text() == "mine"


def test_generate_never_writes_over_the_zoo_its_run_trained_on(finished_run, digits_zoo):
    before = snapshot(digits_zoo)
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", digits_zoo, "--overwrite"),
                         "is the run's checkpoint folder")
    assert snapshot(digits_zoo) == before


@pytest.mark.parametrize("out", ["file", "", "/"])
def test_overwrite_refuses_a_file_the_current_folder_and_the_root(finished_run, tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("keep")
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", out, "--overwrite"))
    assert (tmp_path / "file").read_text() == "keep" and finished_run.is_dir()


def test_overwrite_refuses_a_symlink_to_a_run(finished_run, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(finished_run)
    before = snapshot(finished_run)
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", link, "--overwrite"))
    assert snapshot(finished_run) == before and link.is_symlink()


def test_overwrite_replaces_a_previous_generation(finished_run, tmp_path):
    out = tmp_path / "gen"
    for num in (1, 2):
        result = rpgen("generate", finished_run, "--num", num, "--out", out, "--overwrite", "--no-progress")
        assert result.exit_code == 0, result.output
    assert json.loads((out / "generation.json").read_text())["num"] == 2


# ------------------------------------------------------------- outputs that cannot be written

@pytest.mark.parametrize("command", [["train", "{zoo}", *set_args()], ["generate", "{run}", "--num", "1"],
                                     ["collect", "digits", "--num", "2"]])
def test_out_under_a_regular_file(zoo, finished_run, tmp_path, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = [a.format(zoo=zoo, run=finished_run) for a in command]
    check_one_line_error(rpgen(*args, "--out", blocker / "out", "--no-progress"), blocker, "not a folder")
    assert blocker.read_text() == "x"


def test_out_name_too_long_for_the_file_system(finished_run, tmp_path):
    out = tmp_path / ("x" * 300)
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", out, "--no-progress"), "too long")
    assert list(tmp_path.iterdir()) == []


def test_out_too_big_for_the_disk(finished_run, tmp_path):
    out = tmp_path / "gen"
    check_one_line_error(rpgen("generate", finished_run, "--num", 10**9, "--out", out, "--no-progress"),
                         "GB of disk", "free")
    assert no_models(out)


def test_out_in_an_unwritable_folder(finished_run):
    # Root ignores chmod; /sys/kernel refuses new entries even to root. Non-root runs see the same path.
    out = Path("/sys/kernel/rpgen-gen")
    if not Path("/sys/kernel").is_dir():  # pragma: no cover
        pytest.skip("no /sys/kernel here")
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", out, "--no-progress"))
    assert not out.exists()


# ------------------------------------------------------------- messages printed as plain text

def test_markup_in_a_file_name_is_printed_as_is(zoo):
    (zoo / "[red]x.safetensors").write_bytes(b"not a safetensors file")
    check_one_line_error(rpgen("train", zoo, "--out", zoo.parent / "run", *set_args()), "[red]x.safetensors")
    assert not (zoo.parent / "run").exists()


def test_markup_in_a_config_section_is_printed_as_is(zoo, tmp_path):
    cfg = tmp_path / "[bold]c.toml"
    cfg.write_text("[trian]\nsteps = 3\n")
    check_one_line_error(rpgen("train", zoo, "--out", tmp_path / "run", "--config", cfg), "[trian]", "[bold]c.toml")


def test_markup_in_an_output_path_is_printed_as_is(finished_run, tmp_path):
    out = tmp_path / "[bold]gen"
    result = rpgen("generate", finished_run, "--num", 1, "--out", out, "--no-progress")
    assert result.exit_code == 0 and "[bold]gen" in result.output.replace("\n", ""), result.output
    assert (out / "0000.safetensors").is_file()


# ------------------------------------------------------------- bad configs and checkpoints

def test_config_that_is_not_utf8(zoo, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes("[train]\nsteps = 3  # caf\u00e9\n".encode("latin-1"))
    check_one_line_error(rpgen("train", zoo, "--out", tmp_path / "run", "--config", cfg), "c.toml", "UTF-8")
    assert not (tmp_path / "run").exists()


def test_config_that_is_a_folder(zoo, tmp_path):
    (tmp_path / "cfg").mkdir()
    check_one_line_error(rpgen("train", zoo, "--out", tmp_path / "run", "--config", tmp_path / "cfg"), "cfg")


def test_conditions_file_that_is_not_utf8(zoo):
    (zoo / "conditions.json").write_bytes(b"\xff\xfe{}")
    check_one_line_error(rpgen("train", zoo, "--out", zoo.parent / "run", *set_args()), "conditions.json")
    assert not (zoo.parent / "run").exists()


def test_pt_checkpoint_with_non_string_keys(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i in range(2):
        torch.save({0: torch.randn(3)}, folder / f"{i}.pt")
    check_one_line_error(rpgen("train", folder, "--out", tmp_path / "run", *set_args()),
                         "0.pt", "key 0 is not a string")


def test_garbage_pt_among_good_checkpoints(zoo):
    (zoo / "extra.pt").write_bytes(b"\x00" * 10)
    check_one_line_error(rpgen("train", zoo, "--out", zoo.parent / "run", *set_args()), "extra.pt")


def test_zero_element_tensors_are_copied_end_to_end(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        save_file({"w": torch.randn(4, 8, generator=g), "empty": torch.zeros(0, 3), "b": torch.randn(8, generator=g)},
                  str(folder / f"{i}.safetensors"))
    run, gen = tmp_path / "run", tmp_path / "gen"
    assert rpgen("train", folder, "--out", run, *set_args(), "--no-progress").exit_code == 0
    assert rpgen("generate", run, "--num", 2, "--out", gen, "--no-progress").exit_code == 0
    for i in range(2):
        model = load_file(gen / f"{i:04d}.safetensors")
        assert model["empty"].shape == (0, 3) and model["empty"].dtype == torch.float32
        assert model["w"].shape == (4, 8) and bool(torch.isfinite(model["w"]).all())


def test_resource_messages_use_sensible_units(tmp_path):
    with pytest.raises(RpgenError, match=r"needs about 5\.0 MB of disk .* only 1\.2 MB free"):
        check_resources("writing", memory=0, disk=5_000_000, disk_path=tmp_path, free=1_200_000)
    with pytest.raises(RpgenError, match=r"needs about 3\.0 GB of RAM, only 512 bytes available"):
        check_resources("training", memory=3_000_000_000, available=512)


# ------------------------------------------------------------- damaged run directories

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _nan_tail(path: Path) -> None:  # the last 4 bytes become a float32 NaN: "corrupted last bytes"
    data = bytearray(path.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


def _inf_weight(path: Path) -> None:  # a well-formed file whose weights are not finite
    weights = load_file(path)
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("inf"))
    save_file(weights, str(path))


DAMAGE = {
    "run.json not JSON": ("run.json", lambda p: p.write_text("{oops")),
    "run.json a list": ("run.json", lambda p: p.write_text("[1, 2]")),
    "run.json no count": ("run.json", lambda p: p.write_text('{"num_checkpoints": "many"}')),
    "tokenizer.json not JSON": ("tokenizer.json", lambda p: p.write_text("nope")),
    "config.toml not UTF-8": ("config.toml", lambda p: p.write_bytes(b"\xff\xfe[")),
    "copied.safetensors missing": ("copied.safetensors", lambda p: p.unlink()),
    "copied.safetensors empty": ("copied.safetensors", lambda p: p.write_bytes(b"")),
    "generator truncated": ("generator.safetensors", _truncate),
    "generator last bytes corrupted": ("generator.safetensors", _nan_tail),
    "generator extended": ("generator.safetensors", lambda p: p.write_bytes(p.read_bytes() + b"\0" * 16)),
    "generator with inf weights": ("generator.safetensors", _inf_weight),
    "generator header garbage": ("generator.safetensors", lambda p: p.write_bytes(b"\x10" + b"\0" * 7 + b"}" * 16)),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_run_is_refused_naming_the_file(finished_run, tmp_path, case):
    name, damage = DAMAGE[case]
    run = copy_run(finished_run, tmp_path)
    damage(run / name)
    out = tmp_path / "gen"
    check_one_line_error(rpgen("generate", run, "--num", 1, "--out", out, "--no-progress"), name)
    assert no_models(out)


def test_steps_beyond_the_training_schedule(finished_run, tmp_path):
    out = tmp_path / "gen"
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", out, "--steps", 5000), "--steps 5000",
                         "1000")
    assert no_models(out)


def test_errors_in_a_real_process(zoo, finished_run, tmp_path):
    (zoo / "[red]x.safetensors").write_bytes(b"\0" * 4)
    check_refused(cli("train", zoo, "--out", tmp_path / "run", *set_args()), "error: ", "[red]x.safetensors")
    check_refused(cli("generate", finished_run, "--num", 1, "--out", tmp_path / "gen", "--steps", 5000), "--steps 5000")
    assert not (tmp_path / "run").exists() and no_models(tmp_path / "gen")


def test_generate_killed_leaves_nothing_the_next_run_keeps(finished_run, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "rpgen.cli", "generate", str(finished_run), "--num", "64",
                             "--sampler", "ddpm", "--steps", "1000", "--out", str(tmp_path / "gen"), "--no-progress"],
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob(".gen.*.partial")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(tmp_path.glob(".gen.*.partial")) and not (tmp_path / "gen").exists()
    assert rpgen("generate", finished_run, "--num", 1, "--out", tmp_path / "gen2", "--no-progress").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen2"]


# ------------------------------------------------------------- training, generation, evaluation

def test_resume_of_a_run_in_use_is_refused(stopped_run, zoo, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    _refused_while_locked(run, "train", zoo, "--out", run, "--resume")


@pytest.mark.parametrize("lr, needles", [("inf", ("train.lr = inf",)), ("1e30", ("step", "lr"))])
def test_non_finite_training_stops_with_one_line(zoo, tmp_path, lr, needles):
    run = tmp_path / "run"  # an infinite lr is refused with the config, a huge one at the step it diverges
    check_one_line_error(rpgen("train", zoo, "--out", run, *set_args(tiny(f"train.lr={lr}")), "--no-progress"),
                         *needles)
    assert not (run / "generator.safetensors").exists()


def test_generate_never_writes_non_finite_models_silently(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    weights = load_file(run / "generator.safetensors")
    for name in weights:  # finite but enormous: the sampler overflows
        if name.startswith("denoiser") and weights[name].is_floating_point():
            weights[name] = weights[name] * 1e37
    save_file(weights, str(run / "generator.safetensors"))
    out = tmp_path / "gen"
    result = rpgen("generate", run, "--num", 1, "--out", out, "--no-progress")
    if result.exit_code == 0:
        assert all(bool(torch.isfinite(v).all()) for v in load_file(out / "0000.safetensors").values())
    else:
        check_one_line_error(result, "non-finite")
        assert no_models(out)


def _refused_while_locked(run: Path, *args) -> None:
    """``rpgen ARGS`` fails naming the live process that holds ``run``'s lock, and leaves ``run`` as it was."""
    before = snapshot(run)
    holder, _ = start_python(HOLD_LOCK, run)  # stands for a `train` running on the same run
    try:
        check_one_line_error(rpgen(*args, "--no-progress"), f"in use by process {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert snapshot(run) == before


@pytest.mark.parametrize("command", [["train", "{zoo}", *set_args()], ["generate", "{run}", "--num", "1"]])
def test_overwrite_of_a_run_in_use_is_refused(stopped_run, finished_run, zoo, tmp_path, command):
    run = copy_run(stopped_run, tmp_path)
    _refused_while_locked(run, *[a.format(zoo=zoo, run=finished_run) for a in command], "--out", run, "--overwrite")


def test_resume_refuses_model_changes(stopped_run, zoo, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    check_one_line_error(rpgen("train", zoo, "--out", run, "--resume", "--set", "model.d_model=48", "--no-progress"),
                         "model.d_model")


def test_resume_after_a_crash_between_the_state_renames(stopped_run, zoo, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    # _save_state: write state.tmp, rename state -> state.old, rename state.tmp -> state; crash before the last
    shutil.copytree(run / "state", run / "state.tmp")
    (run / "state").rename(run / "state.old")
    result = rpgen("train", zoo, "--out", run, "--resume", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (run / "generator.safetensors").is_file()


def test_resume_records_train_changes(stopped_run, zoo, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    assert rpgen("train", zoo, "--out", run, "--resume", "--set", "train.steps=14", "--no-progress").exit_code == 0
    assert load_toml(run / "config.toml").train.steps == 14


def test_first_loss_after_resume_is_averaged_over_its_steps(digits_zoo, tmp_path):
    every_step = train(digits_zoo, tmp_path / "a", apply_overrides(Config(), tiny("train.log_every=1")),
                       progress=False)
    losses = _logged_losses(every_step)
    config = apply_overrides(Config(), list(TINY))  # logs every 5 steps; resumes at 7
    train(digits_zoo, tmp_path / "b", config, progress=False, stop_after=7)
    train(digits_zoo, tmp_path / "b", config, progress=False, resume=True)
    assert _logged_losses(tmp_path / "b")[10] == pytest.approx(sum(losses[s] for s in (8, 9, 10)) / 3, rel=1e-5)


def _logged_losses(run: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_evaluate_generated_models_with_nan(finished_run, tmp_path):
    gen = tmp_path / "gen"
    assert rpgen("generate", finished_run, "--num", 3, "--out", gen, "--no-progress").exit_code == 0
    weights = load_file(gen / "0001.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(gen / "0001.safetensors"))
    result = rpgen("evaluate", finished_run, "--generated", gen, "--evaluator", "rpgen.zoo.digits:evaluate",
                   "--no-baselines", "--no-progress")
    if result.exit_code != 0:
        check_one_line_error(result, "0001.safetensors")
    else:
        assert (gen / "results.json").is_file()


# ------------------------------------------------------------- sizes and devices from options

def test_a_huge_num_is_refused_before_anything_is_made(finished_run, tmp_path):
    check_one_line_error(rpgen("generate", finished_run, "--num", 10_000_000_000, "--out", tmp_path / "g"),
                         "generating 10000000000 models", "disk")
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("args, needle", [(["--steps", 0], "--steps"), (["--seed", 2**64], "--seed")])
def test_sampling_options_out_of_range_are_refused(finished_run, tmp_path, args, needle):
    result = rpgen("generate", finished_run, "--num", 1, "--out", tmp_path / "g", *args)
    assert result.exit_code != 0 and needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_api_refuses_a_device_the_machine_lacks_and_an_infinite_temperature(finished_run):
    import rpgen

    with pytest.raises(RpgenError, match="device 'cuda': this machine has no CUDA device"):
        rpgen.load_run(finished_run, device="cuda")
    with pytest.raises(RpgenError, match="--temperature inf: must be a finite number"):
        rpgen.load_run(finished_run).sample(1, temperature=float("inf"))


def test_evaluate_never_writes_its_report_into_the_zoo(finished_run, digits_zoo):
    before = snapshot(digits_zoo)
    check_one_line_error(rpgen("evaluate", finished_run, "--generated", digits_zoo,
                               "--evaluator", "rpgen.zoo.digits:evaluate"), "is the run's checkpoint folder")
    assert snapshot(digits_zoo) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_the_machine_lacks_is_one_line(zoo, finished_run, tmp_path):
    check_one_line_error(rpgen("train", zoo, "--out", tmp_path / "r", "--device", "cuda", *set_args()),
                         "--device cuda: this machine has no CUDA device")
    check_one_line_error(rpgen("generate", finished_run, "--num", 1, "--out", tmp_path / "g", "--device", "cuda"),
                         "device 'cuda': this machine has no CUDA device")
    check_one_line_error(rpgen("train", zoo, "--out", tmp_path / "r", "--device", "tpu", *set_args()),
                         "--device 'tpu': choose auto, cpu or cuda")
    result = rpgen("generate", finished_run, "--num", 1, "--out", tmp_path / "g", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "r").exists()
