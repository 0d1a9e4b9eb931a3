"""Opening input files without ever blocking: the one way every regdpo reader opens a file it did not just
write (source frames and video files, annotations, captions, split files, ``meta.json`` and every other JSON,
checksums, dataset frames).

A named pipe (FIFO), a socket or a device named like a frame or a JSON file would block a plain ``open`` or
``read`` forever (a FIFO's open waits for a writer) or stream without end (``/dev/zero``). Here the path is
first looked at with ``stat`` (``lstat`` when links are refused) and refused unless it is a regular file,
then opened with ``O_NONBLOCK`` (a FIFO swapped in meanwhile opens at once instead of waiting) and the open
descriptor checked again with ``fstat`` (closing that race), so nothing here waits on anything but the disk.

Errors: ``FileNotFoundError`` passes through (callers say "not found" in their own words); anything else is
an :class:`~regdpo.errors.InputUnreadable` whose message is one line naming the path. For a library that
opens a path itself (OpenCV's ``VideoCapture``, ffmpeg), call :func:`check_regular_file` first.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from .errors import InputUnreadable

NONBLOCK = getattr(os, "O_NONBLOCK", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a named pipe (FIFO)", ...)."""
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a regular file"


def _refusal(path: Path, what: str, exc: OSError) -> InputUnreadable:
    if exc.errno == errno.ELOOP:
        reason = "a symbolic link loop" if os.path.islink(path) else "too many levels of symbolic links"
        return InputUnreadable(f"{path}: cannot read the {what} ({reason})")
    return InputUnreadable(f"{path}: cannot read the {what} ({exc.strerror or exc})")


def _check_mode(path: Path, what: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InputUnreadable(f"{path}: the {what} is {file_kind(st.st_mode)}, not a regular file")


def check_regular_file(path: str | os.PathLike, what: str = "file", *, follow_links: bool = True) -> os.stat_result:
    """The ``stat`` of ``path`` when it is a regular file (through links unless ``follow_links`` is False);
    else ``InputUnreadable`` naming it (a FIFO, socket, device, folder, link loop, a refused ``stat``).
    ``FileNotFoundError`` when nothing is there (a dangling link included)."""
    path = Path(path)
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refusal(path, what, exc) from None
    _check_mode(path, what, st)
    return st


def open_input_fd(path: str | os.PathLike, what: str = "file", *, follow_links: bool = True) -> int:
    """A read-only descriptor of the regular file ``path``, opened without blocking (see the module); the
    caller closes it. ``follow_links=False`` refuses a symbolic link (``O_NOFOLLOW``)."""
    path = Path(path)
    check_regular_file(path, what, follow_links=follow_links)
    flags = os.O_RDONLY | NONBLOCK | CLOEXEC | (0 if follow_links else NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refusal(path, what, exc) from None
    try:
        _check_mode(path, what, os.fstat(fd))  # swapped for a FIFO between the stat and the open
        if NONBLOCK:
            os.set_blocking(fd, True)  # a regular file: reads never wait on a writer
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_input(path: str | os.PathLike, what: str = "file", *, follow_links: bool = True) -> io.BufferedReader:
    """``open_input_fd`` as a binary file object (a context manager)."""
    return os.fdopen(open_input_fd(path, what, follow_links=follow_links), "rb")


def file_sha256(path: str | os.PathLike, what: str = "file") -> str:
    """SHA-256 (hex) of the regular file ``path``, read in 1 MiB pieces through :func:`open_input` (never
    blocks on a FIFO; ``what`` names the file in a refusal)."""
    import hashlib

    digest = hashlib.sha256()
    with open_input(path, what) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_input_bytes(path: str | os.PathLike, what: str = "file", *, follow_links: bool = True,
                     max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_input_fd`). ``max_bytes``: a larger file is an
    ``InputUnreadable`` naming it, refused before it is read."""
    path = Path(path)
    with open_input(path, what, follow_links=follow_links) as fh:
        if max_bytes is not None:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise InputUnreadable(f"{path}: {size} bytes, more than the {max_bytes} allowed for the {what}")
        try:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise _refusal(path, what, exc) from None
    if max_bytes is not None and len(data) > max_bytes:  # grew while read
        raise InputUnreadable(f"{path}: more than the {max_bytes} bytes allowed for the {what} (it grew while read)")
    return data


def read_input_text(path: str | os.PathLike, what: str = "file", *, encoding: str = "utf-8",
                    follow_links: bool = True, max_bytes: int | None = None) -> str:
    """The text of the regular file ``path``; ``UnicodeDecodeError`` (the caller names the file) when it is
    not ``encoding``."""
    return read_input_bytes(path, what, follow_links=follow_links, max_bytes=max_bytes).decode(encoding)
