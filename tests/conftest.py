"""Shared fixtures: tiny, real checkpoint zoos built once per test session.

- ``digits_zoo``: a folder of 5 real DigitsCNN checkpoints (seed 0) from ``collect_digits``;
  session-scoped, so treat it as read-only (copy files elsewhere before changing anything).
- ``two_run_zoo``: (named, plain): 4 DigitsCNN checkpoints of 2 independent runs, ``r00_``/``r01_``
  named, and the same files as ``a``..``d`` (a folder that says nothing of its runs); read-only.
- ``tasks_zoo``: a digits-tasks zoo restricted to ``TASKS_ZOO_CODES`` (6 seen tasks, 2 held-out
  ones), 2 checkpoints per task; session-scoped and read-only like ``digits_zoo``.
- ``one_line_error``: ``one_line_error(cli_result, *needles)`` asserts a CLI run failed with one
  ``error:`` line (no traceback) that contains every needle.
- ``TINY``, ``tiny(...)``, ``set_args(...)``, ``rpgen(...)``: a generator config small enough to train
  in seconds (``tiny("train.steps=6")`` replaces keys), ``--set`` arguments for it, and the CLI
  called in-process; test modules import them with ``from conftest import ...``.
- ``load_bench(name)``: a bench/ script imported as a module.
- ``child_env()``, ``start_python(code, *args)``: real child processes that import this rpgen
  (for SIGKILL, lock and concurrency tests); ``start_python`` waits for the child's first line.
- ``saved_bytes(fn, inputs)``: bytes autograd keeps for backward when ``fn(*inputs)`` runs (memory tests).
- ``make_state_dict``: a factory for small synthetic state_dicts shaped like a conv + BatchNorm
  + linear model (float32 weights, BatchNorm buffers, an int64 ``num_batches_tracked``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rpgen import cli as cli_module
from rpgen.cli import app

DIGITS_ZOO_SIZE = 5
TASKS_ZOO_CODES = ("1000000000", "0100000000", "1100000000", "0011000000", "1111100000", "0101010101",
                   "0000000010", "0110000010")  # the last two are held-out tasks


# A generator small enough to train in seconds; the behaviour under test does not depend on size.
TINY = ("model.backbone=lstm", "model.d_model=32", "model.num_layers=1", "model.denoiser_channels=[1, 8, 16, 8, 1]",
        "model.kernel_size=3", "data.token_size=32", "train.steps=12", "train.batch_size=2",
        "train.diffusion_batch=64", "train.warmup_steps=2", "train.save_every=5", "train.log_every=5",
        "sample.steps=4")

_runner = CliRunner()


def tiny(*overrides: str) -> list[str]:
    """``TINY`` with the keys of ``overrides`` replaced (or added): ``tiny("train.steps=6")``."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in TINY if o.split("=", 1)[0] not in keys] + list(overrides)


def set_args(overrides=TINY) -> list[str]:
    """``--set`` arguments for a list of ``key=value`` overrides."""
    return [x for o in overrides for x in ("--set", o)]


def rpgen(*args):
    """Run the CLI in-process; returns typer's ``Result`` (exit_code, output)."""
    return _runner.invoke(app, [str(a) for a in args])


def check_one_line_error(result, *needles) -> None:
    """A CliRunner result is exit status 1 with one ``error:`` line holding every needle."""
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text and "\n" not in text, text
    for needle in needles:
        assert str(needle) in text, (needle, text)


def train_and_generate(zoo, tmp_path, overrides, *, num=3, seed=0, out="gen"):
    """Train ``tmp_path/run`` (once) with ``overrides``, generate ``num`` models into ``tmp_path/out``;
    return the run and the generated state dicts."""
    run, gen = tmp_path / "run", tmp_path / out
    if not run.exists():
        result = rpgen("train", zoo, "--out", run, "--no-progress", *set_args(overrides))
        assert result.exit_code == 0, result.output
    result = rpgen("generate", run, "--num", num, "--out", gen, "--seed", seed, "--no-progress")
    assert result.exit_code == 0, result.output
    return run, [load_file(gen / f"{i:04d}.safetensors") for i in range(num)]


@pytest.fixture(scope="session")
def digits_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding ``0000.safetensors`` ... ``0004.safetensors`` from ``collect_digits(seed=0)``."""
    from rpgen.zoo.digits import collect_digits

    out = tmp_path_factory.mktemp("zoo") / "digits"
    collect_digits(out, num_checkpoints=DIGITS_ZOO_SIZE, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def two_run_zoo(tmp_path_factory):
    """4 checkpoints from 2 independent digits runs, named r00_/r01_, and the same files renamed
    without prefixes (a folder that says nothing about its runs)."""
    root = tmp_path_factory.mktemp("runs")
    from rpgen.zoo.digits import collect_digits

    collect_digits(root / "named", num_checkpoints=4, runs=2, seed=0, progress=False)
    plain = root / "plain"
    plain.mkdir()
    for i, path in enumerate(sorted((root / "named").glob("*.safetensors"))):
        shutil.copy(path, plain / f"{'abcd'[i]}.safetensors")
    return root / "named", plain


@pytest.fixture(scope="session")
def tasks_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small digits-tasks zoo (``collect_digits_tasks`` on ``TASKS_ZOO_CODES``, seed 0)."""
    from rpgen.zoo.digits_tasks import collect_digits_tasks

    out = tmp_path_factory.mktemp("tasks") / "zoo"
    collect_digits_tasks(out, num_checkpoints=2, codes=TASKS_ZOO_CODES, progress=False)
    return out


@pytest.fixture
def make_state_dict() -> Callable[..., dict[str, torch.Tensor]]:
    """``make_state_dict(seed=0)`` -> a small state_dict; different seeds give different values."""

    def make(seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {
            "conv.weight": torch.randn(4, 1, 3, 3, generator=g),
            "bn.weight": 1 + 0.1 * torch.randn(4, generator=g),
            "bn.bias": 0.1 * torch.randn(4, generator=g),
            "bn.running_mean": torch.randn(4, generator=g),
            "bn.running_var": torch.rand(4, generator=g) + 0.5,
            "bn.num_batches_tracked": torch.tensor(100 + seed, dtype=torch.int64),
            "fc.weight": torch.randn(3, 4, generator=g),
            "fc.bias": torch.randn(3, generator=g),
        }

    return make


@pytest.fixture
def one_line_error() -> Callable[..., None]:
    """:func:`check_one_line_error` as a fixture."""
    return check_one_line_error


BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """Import bench/NAME.py. bench/ is scripts (``from common import ...``), so it is on sys.path
    only while the module loads."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def child_env() -> dict[str, str]:
    """The environment for a child Python that imports the same rpgen as the tests (one thread)."""
    src = str(Path(cli_module.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def start_python(code: str, *args) -> tuple[subprocess.Popen, str]:
    """Start ``python -c code args...``; return it and the first line it prints (it signals readiness)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().strip()
    if not line:
        proc.wait(timeout=60)
        raise AssertionError(f"child exited ({proc.returncode}) before it was ready: {proc.stderr.read()}")
    return proc, line


def assert_causal(module: torch.nn.Module, *, width: int) -> None:
    """Changing tokens 8.. of a 12-token sequence changes ``module``'s output there and nowhere before."""
    x = torch.randn(1, 12, width)
    y = module(x)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    torch.testing.assert_close(module(x2)[:, :8], y[:, :8])
    assert not torch.allclose(module(x2)[:, 8:], y[:, 8:])


def saved_bytes(fn, inputs: list[torch.Tensor]) -> int:
    """Bytes autograd keeps for backward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(storages.values())
