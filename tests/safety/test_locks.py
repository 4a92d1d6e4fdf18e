"""rpgen.safety.locks: run_lock refuses while a live process holds it and takes over a dead one's lock."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from conftest import start_python

from rpgen.errors import RpgenError
from rpgen.safety.locks import lock_path, other_holder, run_lock

HOLD = """
import sys, time
from rpgen.safety.locks import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_run_lock_records_owner_and_is_removed_after(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as lock:
        assert lock == lock_path(run) == tmp_path / ".run.lock"
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(RpgenError, match=f"is in use by process {os.getpid()}"):  # not re-entrant
            with run_lock(run):
                pass
    assert not lock_path(run).exists()
    with run_lock(run):  # free again
        pass


def test_live_holder_refuses_and_dead_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc, line = start_python(HOLD, run)
    try:
        assert line == "locked"
        with pytest.raises(RpgenError) as err:
            with run_lock(run):
                pass
        message = str(err.value)
        assert f"{run} is in use by process {proc.pid}" in message and "\n" not in message
    finally:
        _kill(proc)
    assert json.loads(lock_path(run).read_text())["pid"] == proc.pid  # SIGKILL left the lock file
    with run_lock(run) as lock:  # stale: its owner is dead
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock_path(run).exists()


def test_lock_in_an_impossible_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RpgenError, match="is a file, not a folder"):
        with run_lock(Path(blocker) / "run"):
            pass


def test_other_holder_names_only_another_live_process(tmp_path):
    run = tmp_path / "run"
    assert other_holder(run) is None  # no lock file
    with run_lock(run):
        assert other_holder(run) is None  # ours
    proc, _ = start_python(HOLD, run)
    try:
        assert other_holder(run) == f"process {proc.pid} on {socket.gethostname()}"
    finally:
        _kill(proc)
    assert other_holder(run) is None  # stale
