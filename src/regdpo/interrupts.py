"""SIGTERM handled like Ctrl-C: the signal raises ``regdpo.errors.Terminated`` (a ``KeyboardInterrupt``)
in the main thread, so whatever handles Ctrl-C (abandon the current video atomically, remove temporary
files, rebuild the manifest, say how to resume) handles a cluster's preemption too."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator

from .errors import Terminated


_received: list[int] = []
"""The interrupting signals this process has received (see :func:`record_interrupts`)."""


def _raise_terminated(signum, frame) -> None:
    _received.append(signum)
    raise Terminated(f"terminated by signal {signum}")


def _raise_interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def record_interrupts() -> None:
    """From now on a Ctrl-C (SIGINT) is remembered as well as raised, so that one a library turned into
    another error (numpy's import makes it an ``ImportError`` naming no interrupt) is still recognised by
    :func:`interrupt_behind`. Only where SIGINT has Python's default handler (a SIGINT ignored, as for a
    background job, stays ignored) and in the main thread."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupt)


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


def interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) behind ``exc``: ``exc`` itself, or a ``KeyboardInterrupt`` it was raised from or
    while handling (numpy turns a Ctrl-C during the import of its C extension into an ``ImportError``); else
    None. Lets a command say "interrupted" (exit 130) instead of a traceback however a library wraps it. An
    error raised after this process received SIGINT or SIGTERM (:func:`record_interrupts`) counts as that
    interrupt too: a library may replace it with an error that keeps no trace of it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    if _received:
        return Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()
    return None


def run_interruptible(run: Callable[[], int], prog: str) -> int:
    """An entry point's body: ``run()``'s status, or ``PROG: interrupted`` on stderr and 130 / 143 when a Ctrl-C
    or SIGTERM stops it before its own handling starts (while its modules load or it sets up), also when a
    library wrapped the interrupt in another error (:func:`interrupt_behind`). Other errors propagate."""
    record_interrupts()  # a Ctrl-C a library turns into another error (numpy's import) is still one
    try:
        return run()
    except Exception as exc:  # a library that wraps a Ctrl-C (numpy's import: an ImportError)
        interrupt = interrupt_behind(exc)
        if interrupt is None:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return exit_status(interrupt)
    except KeyboardInterrupt as exc:  # nothing started yet, or nothing that needs more than this line
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return exit_status(exc)
