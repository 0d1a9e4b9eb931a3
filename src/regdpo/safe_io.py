"""Writing files without following planted links: every new file is created under a fresh, unique
temporary name (``O_CREAT | O_EXCL | O_NOFOLLOW``) in the destination's folder and renamed over the
destination (``os.replace`` replaces a link, it never writes through it). A failure (a full disk
included) removes the temporary file."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: temporaries are not locked (remove_stale_temps then takes any)
    fcntl = None  # type: ignore[assignment]

from .errors import FormatError, OutputUnwritable, out_of_space

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_new(path: str | os.PathLike, mode: int = 0o644) -> int:
    """A file descriptor of a file created at ``path``, which must not exist (not even as a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)


def open_nofollow(path: str | os.PathLike, mode: int = 0o644) -> int:
    """Create or truncate ``path`` for writing, refusing (``ELOOP``) when it is a symbolic link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW | CLOEXEC, mode)


TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.[0-9a-f]{12}\.tmp(?:\.[a-z0-9]+)?$")
"""The name of a temporary file of this module: ``.{name}.{12 hex digits}.tmp[.ext]`` (it becomes ``name``)."""


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")


def temp_base(name: str) -> str | None:
    """The file a temporary file named ``name`` was to become (``TEMP_NAME``), else None."""
    match = TEMP_NAME.match(name)
    return match.group("base") if match else None


def _open_held_temp(path: Path, suffix: str) -> tuple[Path, int]:
    """A fresh temporary beside ``path``, created exclusively, and its descriptor, which holds an ``flock`` on it
    until the caller closes it: while its writer lives, :func:`remove_stale_temps` never takes it. One that
    the cleaner removed between its creation and the lock (no link left) is given up for another name."""
    for _ in range(100):
        tmp = _temp_name(path, suffix)
        fd = open_new(tmp)
        if fcntl is None:
            return tmp, fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return tmp, fd
        os.close(fd)
    raise OSError(errno.EAGAIN, "temporary files removed as fast as they are made", str(path))


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (created empty, exclusively) for a writer that opens
    files by name (ffmpeg, Pillow); on success it replaces ``path``, on any error it is removed."""
    path = Path(path)
    tmp, held = _open_held_temp(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(held)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through an exclusive temporary file and ``os.replace``. An error of the
    write itself (a full disk, a file-size limit) names ``path``, so it reaches the user as one line."""
    path = Path(path)
    tmp, fd = _open_held_temp(path, "")
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        os.close(fd)  # the lock is held until the temporary is renamed (or removed)


def remove_stale_temps(folder: str | os.PathLike, wanted: Callable[[str], bool]) -> list[str]:
    """Remove, from ``folder`` only (not below), the temporary files of this module (``TEMP_NAME``) that a
    killed process left, of the files ``wanted(name)`` accepts; returns their names. A temporary is taken only
    when it is a plain file (never a link, a FIFO or a folder) whose ``flock`` is free: a living writer holds
    it (``_open_held_temp``), so a command running beside is never robbed. Anything else is left alone."""
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    removed = []
    for name in names:
        base = temp_base(name)
        if base is None or not wanted(base):
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | CLOEXEC)
        except OSError:  # a link (ELOOP), gone meanwhile, refused
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # its writer is alive
                    continue
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def real_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) as a folder; refuse when it is a symbolic link (nothing is written
    through links) or not a folder. ``FileNotFoundError`` when another process removed a parent just
    created (a race the caller can retry)."""
    path = Path(path)
    if path.is_symlink():
        raise FormatError(f"{path} is a symbolic link; regdpo never writes through links (remove it)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileNotFoundError:  # a parent removed meanwhile by another process (an empty .staging/): the caller may retry
        raise
    except FileExistsError as exc:  # it existed, then another process removed it before the check: the same race
        if os.path.lexists(path):
            raise FormatError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
        raise FileNotFoundError(errno.ENOENT, "removed by another process meanwhile", str(path)) from None
    except OSError as exc:  # read-only, no permission, a file in the way, disk full
        raise FormatError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
    if path.is_symlink() or not path.is_dir():
        raise FormatError(f"{path} is not a folder")
    return path


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Before any work: prove that files can be created in ``folder`` (or, when it does not exist yet, in the
    nearest existing folder above it, where it will be made) by creating and removing an exclusive temporary
    file. ``OutputUnwritable`` naming ``folder`` when the file system refuses (read-only, no permission, full,
    a file in the way); nothing is left behind."""
    folder = Path(folder)
    probe_in = folder
    while not (probe_in.exists() or probe_in.is_symlink()) and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        where = "is a file" if probe_in == folder else f"is below {probe_in}, a file"
        raise OutputUnwritable(f"{what} {folder}: {where}, not a folder")
    tmp = _temp_name(probe_in / ".regdpo-write-probe", "")
    try:
        os.close(open_new(tmp))
    except OSError as exc:
        full = " (out of disk space or over quota)" if out_of_space(exc) else ""
        raise OutputUnwritable(f"{what} {folder}: cannot write there ({exc.strerror or exc}){full}") from None
    try:
        os.unlink(tmp)
    except OSError as exc:
        raise OutputUnwritable(f"{what} {folder}: cannot remove files there ({exc.strerror or exc})") from None
