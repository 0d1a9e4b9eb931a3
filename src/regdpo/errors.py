"""Errors that reach the user as one clear line (``regdpo: error: ...``), not a traceback."""


class RegdpoError(Exception):
    """Base of the errors caused by input (files, folders, flags), not by a bug."""


class FormatError(RegdpoError, ValueError):
    """The data on disk does not follow the format; the message names the file."""


class FrameReadError(RegdpoError, IOError):
    """A frame or mask file is missing, corrupt or of the wrong kind; the message names it."""


class UsageError(RegdpoError, ValueError):
    """A flag or argument is invalid; the message names the flag."""
