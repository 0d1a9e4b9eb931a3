"""Errors that reach the user as one clear line (``regdpo: error: ...``), not a traceback."""


class RegdpoError(Exception):
    """Base of the errors caused by input (files, folders, flags), not by a bug."""


class FormatError(RegdpoError, ValueError):
    """The data on disk does not follow the format; the message names the file."""


class JSONFileError(FormatError):
    """A JSON file cannot be used: not a regular file, too large, not UTF-8 JSON, too deeply nested, a number
    Python cannot hold, or a field of the wrong type or range (``regdpo.json_io``); the message names the file
    (and the field)."""


class FrameReadError(RegdpoError, IOError):
    """A frame or mask file is missing, corrupt or of the wrong kind; the message names it."""


class InputUnreadable(FrameReadError):
    """An input file or folder exists but cannot be read (no permission, an I/O error); the message names it."""


class OutputUnwritable(RegdpoError):
    """An output folder cannot be written (read-only file system, no permission, a file in the way): found
    by a probe before any work; the message names it."""


class UsageError(RegdpoError, ValueError):
    """A flag or argument is invalid; the message names the flag."""


class DiskFull(RegdpoError):
    """The output file system is full (or a quota or file-size limit is reached): a run-level stop,
    never a per-video failure (no attempt is spent)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and Kubernetes send before killing) arrived: handled like Ctrl-C."""


USAGE_EXIT = 2  # a flag or argument is wrong (argparse uses 2 too)
DATA_EXIT = 1  # the data on disk (or the disk itself) is wrong


def exit_code(exc: RegdpoError) -> int:
    """The exit status for ``exc``: 2 for a usage error (:class:`UsageError`), 1 for every other
    (data-caused) error: a malformed file, an unreadable frame, a full disk."""
    return USAGE_EXIT if isinstance(exc, UsageError) else DATA_EXIT


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` of an ``OSError`` the file system raised (both paths of a rename)."""
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return f"{where}: {exc.strerror or exc}"


OUT_OF_SPACE_ERRNOS = frozenset(n for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(__import__("errno"), n))


def out_of_space(exc: BaseException | None) -> OSError | None:
    """The out-of-space ``OSError`` (ENOSPC, EDQUOT, EFBIG) behind ``exc`` (its causes included), else None."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in {getattr(errno, n) for n in OUT_OF_SPACE_ERRNOS}:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
