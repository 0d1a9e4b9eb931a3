"""Engines: what runs the generator's units of work, and where.

A unit of work is one source video. It passes three stages (``VideoStages`` in ``pipeline``):

    prepare (reader: probe, decode, resize, masks)  ->  compute (worker: the backend)  ->
    finish  (writer: PNGs, fsync, meta.json last, or the failure record)

Every stage but ``finish`` turns a per-video error into data carried by the work item, so one bad
video never stops an engine; ``finish`` commits the video atomically (or records why not) and returns
its outcome. An engine runs the stages over a list of sources and reports the outcomes **in the
list's order**. Only run-level errors (``KeyboardInterrupt``, a failure to record a failure) leave
``run``; videos already committed stay committed, so the run resumes from the folder.

``LocalEngine`` runs in this process: the backend on the calling thread (CUDA stays on one thread),
the reader one video ahead on a thread, and the writer on a thread behind a queue of one, so video k
is written while the backend computes video k+1. ``overlap=False`` runs the stages one after the
other (the loop before the overlap; kept for the bench and for debugging).
"""

from __future__ import annotations

import abc
import queue
import threading
from typing import Any, Callable, Iterable, Protocol, Sequence

_END = object()
_POLL_S = 0.1
_READER_GRACE_S = 2.0


class Stages(Protocol):
    """The three stages of one unit of work (see the module docstring)."""

    def prepare(self, source: Any) -> Any: ...

    def compute(self, work: Any, backend: Any) -> Any: ...

    def finish(self, work: Any) -> Any: ...


OnOutcome = Callable[[Any], None]


class Engine(abc.ABC):
    """Runs ``stages`` over ``sources``; ``on_outcome`` gets each video's outcome, in the sources' order."""

    name: str = "base"

    @abc.abstractmethod
    def run(self, stages: Stages, sources: Sequence[Any], on_outcome: OnOutcome) -> None:
        """Return when every source has an outcome; raise only run-level errors."""

    def backend_settings(self, stages: Stages) -> dict[str, Any] | None:
        """The backend's ``settings()`` (compared on ``--resume``), None when unknown."""
        return None


class LocalEngine(Engine):
    """This process, one backend: reader thread -> backend on the calling thread -> writer thread."""

    name = "local"

    def __init__(self, backend: Any, overlap: bool = True):
        self.backend = backend
        self.overlap = overlap

    def backend_settings(self, stages: Stages) -> dict[str, Any] | None:
        return None if self.backend is None else self.backend.settings()

    def run(self, stages: Stages, sources: Sequence[Any], on_outcome: OnOutcome) -> None:
        if not self.overlap:
            for source in sources:
                on_outcome(stages.finish(stages.compute(stages.prepare(source), self.backend)))
            return
        _Overlapped(stages, self.backend, on_outcome).run(sources)


class _Overlapped:
    """One run of the overlapped local loop (threads, two queues of one)."""

    def __init__(self, stages: Stages, backend: Any, on_outcome: OnOutcome):
        self.stages, self.backend, self.on_outcome = stages, backend, on_outcome
        self.prepared: queue.Queue = queue.Queue(maxsize=1)
        self.computed: queue.Queue = queue.Queue(maxsize=1)
        self.stop_reading = threading.Event()  # the compute loop has ended (done, error, Ctrl-C)
        self.writer_gone = threading.Event()  # the writer has ended (all written, or a run-level error)
        self.errors: list[BaseException] = []

    def run(self, sources: Iterable[Any]) -> None:
        reader = threading.Thread(target=self._read, args=(sources,), name="regdpo-reader", daemon=True)
        writer = threading.Thread(target=self._write, name="regdpo-writer", daemon=True)
        reader.start()
        writer.start()
        try:
            while not self.writer_gone.is_set():
                work = _get(self.prepared, self.writer_gone)
                if work is _END:
                    break
                work = self.stages.compute(work, self.backend)
                if not _put(self.computed, work, self.writer_gone):
                    break
        finally:  # also on Ctrl-C: what is computed is still written (a finished video is never thrown away)
            self.stop_reading.set()
            _put(self.computed, _END, self.writer_gone)
            writer.join()
            # The reader only reads (nothing of it is lost): it is not waited for beyond a grace time, so a
            # read that never returns (a file system that hangs) cannot hold a Ctrl-C or SIGTERM (daemon thread)
            reader.join(_READER_GRACE_S)
        if self.errors:
            raise self.errors[0]

    def _read(self, sources: Iterable[Any]) -> None:
        try:
            for source in sources:
                if self.stop_reading.is_set():
                    return
                work = self.stages.prepare(source)
                if not _put(self.prepared, work, self.stop_reading):
                    return
        except BaseException as exc:  # prepare turns per-video errors into data: this is run-level
            self.errors.append(exc)
        finally:
            _put(self.prepared, _END, self.stop_reading)

    def _write(self) -> None:
        try:
            while True:
                work = self.computed.get()
                if work is _END:
                    return
                self.on_outcome(self.stages.finish(work))
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.writer_gone.set()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room unless ``stop`` is set. Returns whether it was put."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """The next item, or ``_END`` once ``stop`` is set and nothing is waiting."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return _END
