"""argparse ``type=`` functions for the numeric flags of every command.

A value outside its range, ``nan``, ``inf`` or a number too large to mean anything is refused while the
flags are parsed, before any file is touched: argparse prints ``argument --FLAG: ...`` and exits 2.
Ranges are closed (``lo <= x <= hi``) unless a bound is marked open; ``None`` means unbounded on that side.
Checks that depend on several flags (``--resolution`` a multiple of 8, ``--flicker_segments`` at most
``--nframes``) stay with the command's config.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``PROG: error: ...  (see --help)``, exit 2), never the usage
    block; an unknown flag names the closest known one (``did you mean --resolution?``). Subcommand parsers
    made with ``add_subparsers().add_parser`` are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.unknown_arguments(unknown)
        return parsed

    def unknown_arguments(self, unknown: list[str]) -> None:
        """Exit with one line naming the ``unknown`` arguments, and the closest known flag of the first."""
        import difflib

        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        flag = next((u.partition("=")[0] for u in unknown if u.startswith("--")), None)
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75) if flag else []
        hint = f"; did you mean {close[0]}?" if close else ""
        self.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{'>' if lo_open else '>='} {lo:g} and {'<' if hi_open else '<='} {hi:g}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def _check(value: float, text: str, lo, hi, lo_open: bool, hi_open: bool, kind: str):
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise argparse.ArgumentTypeError(f"{text!r}: must be {kind} {_bounds_text(lo, hi, lo_open, hi_open)}")
    return value


def real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in the range (``nan`` and ``inf`` are refused whatever the range)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        return _check(value, text, lo, hi, lo_open, hi_open, "a number")

    parse.__name__ = "number"  # argparse's fallback message says "invalid number value"
    return parse


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``lo..hi``, written as digits (``1e12`` and ``2.5`` are refused, as ``int`` does)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        return _check(value, text, lo, hi, False, False, "an integer")

    parse.__name__ = "integer"
    return parse


# shared ranges: generous for any real use, small enough that no value can exhaust memory or time
MAX_SIDE = 8192  # pixels of a frame's side (8K)
MAX_FRAMES = 100_000  # frames of one clip
MAX_FPS = 1000.0
MAX_WORKERS = 1024  # processes on one machine
