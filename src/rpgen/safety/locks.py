"""Which live process owns a path: owner files held under an OS lock, and the run lock.

An owner file holds ``{"pid", "host"}`` of its owner and stays locked (``flock``, or
``msvcrt.locking`` on Windows) while the owner runs. The operating system drops the lock when the
owner dies however it dies (SIGKILL included), so "is the owner alive?" is answered by trying to
take the lock, not by guessing from a PID that may have been reused: a lock file left behind by a
dead process is stale and is simply taken over.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rpgen.errors import RpgenError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside it, so it survives ``path`` being replaced."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def take(path: Path) -> int | None:
    """Open (creating) the owner file ``path`` and lock it; the fd, or None if a live process holds it.

    The lock is tied to the returned fd: it lasts until :func:`release` or the process's death.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:  # its owner removed it after we opened it
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file that was unlinked meanwhile: lock the new one


def create_owned(path: Path) -> int:
    """Create the owner file ``path`` (it must not exist) already locked and filled; return its fd.

    It is written under a staging name and renamed, so nobody ever sees it unlocked or empty.
    """
    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if not _try_lock(fd):  # pragma: no cover - a file nobody else has opened
            raise OSError(f"cannot lock {staging}")
        write_owner(fd)
        os.replace(staging, path)
    except BaseException:
        os.close(fd)
        staging.unlink(missing_ok=True)
        raise
    return fd


def write_owner(fd: int) -> None:
    """Record this process (PID and host name) in the owner file open as ``fd``."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())


def release(fd: int, path: Path) -> None:
    """Remove the owner file ``path`` (while still holding it), then drop the lock."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:  # pragma: no cover - Windows cannot remove an open file; a stale one is harmless
        pass
    finally:
        os.close(fd)


def describe_owner(path: Path) -> str:
    """"process N on HOST" from an owner file, or "another process" if it cannot be read yet."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return f"process {int(owner['pid'])} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def other_holder(path: str | os.PathLike) -> str | None:
    """"process N on HOST" if another live process holds the lock of ``path``; None if free or ours."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:  # no lock file: nobody holds it
        return None
    try:
        if _try_lock(fd):
            return None  # free (a stale file of a dead process); our lock, taken, drops at close
        try:
            owner = json.loads(lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = {}
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            return None
        return describe_owner(lock)
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` for the block; refuse in one line if a live process holds it.

    The lock file (:func:`lock_path`, beside ``run_dir``) records this process's PID and host
    name; one left by a dead process is taken over. Yields the lock file's path.
    """
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = take(path)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise RpgenError(f"cannot create folder {run_dir}: {blocker} is a file, not a folder") from None
    except OSError as e:
        raise RpgenError(f"cannot lock {run_dir}: {e.strerror or e} ({path})") from None
    if fd is None:
        raise RpgenError(f"{run_dir} is in use by {describe_owner(path)} (lock file {path}); "
                         "wait for it to finish or stop it")
    try:
        write_owner(fd)
        yield path
    finally:
        release(fd, path)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if another open file holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    return True
