"""SIGTERM handled like Ctrl-C: the signal raises ``regdpo.errors.Terminated`` (a ``KeyboardInterrupt``)
in the main thread, so whatever handles Ctrl-C (abandon the current video atomically, remove temporary
files, rebuild the manifest, say how to resume) handles a cluster's preemption too."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from .errors import Terminated


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""Exit statuses after Ctrl-C (128 + SIGINT) and SIGTERM (128 + SIGTERM), as a shell reports them."""


def exit_status(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
