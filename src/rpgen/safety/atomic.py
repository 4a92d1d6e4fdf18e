"""Atomic outputs: a file or folder appears complete or not at all, never half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from rpgen.errors import RpgenError
from rpgen.safety.locks import create_owned, release, take
from rpgen.safety.overwrite import check_replaceable, mark

OWNER = ".rpgen-owner"  # inside a ``.partial`` folder: the PID and host of the process building it


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise RpgenError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it 0600; an output gets ordinary permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to the file ``path`` (created if missing), never through a
    symbolic link: a log inside an output stays inside it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        why = "is a symbolic link" if path.is_symlink() else (e.strerror or str(e))
        raise RpgenError(f"cannot write {path}: {why}") from None
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False, later: Sequence[str] = ()) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` when the block succeeds.

    Refuses an existing ``path`` unless ``overwrite``, and even then replaces only an rpgen output
    (:func:`rpgen.safety.overwrite.check_replaceable`); on failure nothing is left at ``path``. The
    finished folder gets its provenance file (:func:`rpgen.safety.overwrite.mark`; ``later``: the
    names rpgen may add to it afterwards). The temporary ``.NAME.XXXX.partial`` folder records its
    owner (``.rpgen-owner``: PID and host, held locked); those of dead owners (a SIGKILL, a power
    cut) in the same parent are removed first. When another command created ``path`` meanwhile,
    the one that finishes second fails (or, with ``overwrite``, replaces it if it may).
    """
    path = Path(path)
    check_output_dir(path, overwrite=overwrite)
    make_folder(path.parent)
    remove_stale_partials(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as e:
        raise RpgenError(f"cannot write {path}: {e.strerror or e}") from None
    owner: int | None = None
    try:
        owner = create_owned(tmp / OWNER)
        yield tmp
        release(owner, tmp / OWNER)
        owner = None
        mark(tmp, later=later)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; an output gets ordinary permissions
        if path.exists() or path.is_symlink():  # another command wrote it while this one ran
            check_output_dir(path, overwrite=overwrite)
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise RpgenError(f"cannot write {path}: {e.strerror or e} (did another command write it meanwhile?)"
                             ) from None
    finally:
        if owner is not None:
            release(owner, tmp / OWNER)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the ``.*.partial`` folders in ``folder`` whose owner process is dead; return them.

    Folders without an owner file (being created, or from an older rpgen) are left alone.
    """
    removed = []
    for partial in folder.glob(".*.partial"):
        owner_file = partial / OWNER
        if not owner_file.is_file():
            continue
        try:
            fd = take(owner_file)
        except OSError:
            continue
        if fd is None:  # its owner is alive
            continue
        try:
            shutil.rmtree(partial, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(partial)
    return removed


def make_folder(path: Path) -> None:
    """``mkdir -p path``, with a one-line error when a file is in the way or it cannot be created."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise RpgenError(f"cannot create folder {path}: {blocker} is a file, not a folder") from None
    except OSError as e:
        raise RpgenError(f"cannot create folder {path}: {e.strerror or e}") from None


def check_output_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite``; refuse to replace anything but an rpgen output."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise RpgenError(f"output directory {path} already exists (pass --overwrite to replace it)")
    check_replaceable(path)
