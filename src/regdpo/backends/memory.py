"""Device out-of-memory errors: telling them apart from every other error, and freeing memory after one.

The generator retries a video once at a backend's reduced settings after a device out-of-memory
error (``NegativeBackend.reducible``; see docs/models.md, "Out of GPU memory"). Only these count:

- ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class since torch 2.5;
  older torch has ``torch.cuda.OutOfMemoryError`` only), or
- a ``RuntimeError`` whose message starts with ``CUDA out of memory`` (torch before 1.13 raised that),

the error itself or an error explicitly raised ``from`` one. A CPU ``MemoryError`` is not one (the reduced
settings target GPU activations; the run records it as a failed video), nor is a full disk
(``errors.out_of_space``), nor any other ``RuntimeError``. Nothing here imports torch: an error can only be
torch's if torch is already imported.
"""

from __future__ import annotations

import gc
import sys

OOM_MESSAGE_PREFIX = "CUDA out of memory"
"""How torch's CUDA caching allocator starts its out-of-memory message (every version)."""


def _torch_oom_classes() -> tuple[type, ...]:
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    found = {getattr(torch, "OutOfMemoryError", None), getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)}
    return tuple(c for c in found if isinstance(c, type))


def device_oom(exc: BaseException | None) -> BaseException | None:
    """The device out-of-memory error behind ``exc`` (itself or an explicit ``raise ... from`` cause), else None."""
    classes = _torch_oom_classes()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if classes and isinstance(exc, classes):
            return exc
        if isinstance(exc, RuntimeError) and str(exc).startswith(OOM_MESSAGE_PREFIX):
            return exc
        exc = exc.__cause__
    return None


def oom_summary(exc: BaseException, limit: int = 240) -> str:
    """One line for a log or a record: the error's type and the first line of its message, bounded."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def free_device_memory() -> None:
    """Collect garbage and return the CUDA caching allocator's free blocks to the driver (when CUDA is in use).

    Call it once nothing references the failed attempt any more (its exception and traceback included):
    tensors still reachable from a traceback's frames cannot be freed."""
    gc.collect()
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        cuda.empty_cache()
