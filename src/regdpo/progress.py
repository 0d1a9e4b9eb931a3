"""Progress and messages of long runs (``generate``, ``audit``, ``preview``).

On a terminal: a tqdm bar. Otherwise (a SLURM log, a pipe): plain lines, one at the start, then at
most one every ``interval_s`` seconds, and one at the end, never ``\\r`` frames. Library messages
("skipped x: ...") go through ``logging`` (logger ``regdpo``); ``setup_cli_logging`` prints them on
stderr, above the bar when one is drawn.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Iterable, Iterator

__all__ = ["Progress", "setup_cli_logging", "plural", "logger", "DEFAULT_INTERVAL_S"]

logger = logging.getLogger("regdpo")

DEFAULT_INTERVAL_S = 30.0
"""Seconds between two progress lines when not on a terminal."""


def plural(count: int, noun: str) -> str:
    """``1 video``, ``2 videos``, ``0 videos``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _TqdmAwareHandler(logging.Handler):
    """Writes records through ``tqdm.write``, so a drawn bar is not torn by a message."""

    def __init__(self, stream: IO[str] | None = None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream or sys.stderr)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def setup_cli_logging(level: int = logging.INFO) -> None:
    """Print the ``regdpo`` logger's messages (bare text) on stderr; idempotent. For the command line."""
    if not any(isinstance(h, _TqdmAwareHandler) for h in logger.handlers):
        handler = _TqdmAwareHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


class Progress:
    """A progress display over ``total`` units (``update``, ``set_postfix_str``, ``close``; or iterate).

    ``enabled=False`` shows nothing. ``terminal=None`` decides from ``file.isatty()``.
    """

    def __init__(self, total: int, desc: str, unit: str = "video", *, enabled: bool = True,
                 file: IO[str] | None = None, terminal: bool | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.file = file or sys.stderr
        self.enabled = enabled
        self.interval_s = interval_s
        self.count = 0
        self.item = ""
        self.t0 = time.monotonic()
        self._last_line = -float("inf")
        self._closed = False
        self._bar = None
        if enabled and (_is_terminal(self.file) if terminal is None else terminal):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=unit, file=self.file, dynamic_ncols=True, desc=desc)
        elif enabled:
            self._line()

    # -- the tqdm subset the loops use
    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.item = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=refresh)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_line >= self.interval_s and self.count < self.total:
            self._line()

    def advance_to(self, count: int) -> None:
        """``update`` up to ``count`` done units (a count read from elsewhere, e.g. files on disk)."""
        if count > self.count:
            self.update(count - self.count)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line(final=True)

    def wrap(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Iterate ``iterable``, one ``update`` per element, ``close`` at the end."""
        try:
            for element in iterable:
                yield element
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain lines
    def _line(self, final: bool = False) -> None:
        now = time.monotonic()
        self._last_line = now
        elapsed = now - self.t0
        share = f" ({100 * self.count / self.total:.0f} %)" if self.total else ""
        text = f"{self.desc}: {self.count}/{plural(self.total, self.unit)}{share}, {elapsed:.1f} s"
        if final:
            text += " (done)" if self.count >= self.total else " (stopped)"
        elif 0 < self.count < self.total:
            text += f", about {elapsed / self.count * (self.total - self.count):.0f} s left"
        if self.item and not final:
            text += f", at {self.item}"
        print(text, file=self.file, flush=True)
