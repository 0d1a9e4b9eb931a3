"""ProPainter priors computed once and reused: across the models of one ``regdpo eval`` run (and its resumes),
and across the validation passes of one training run.

DiffuEraser's standard inference starts from ProPainter's result for the clip (the *prior*). The prior depends
on the clip's frames, its hole and ProPainter (settings, weights, the code that runs it, the device kind and
precision), never on the DiffuEraser weights being compared, so every model of an eval run can start from the
same array. Reusing it changes no byte of any result: the models backend uses a given prior exactly where it
would have used the one it computes (``ModelsBackend.generate(..., prior=)``; the tests compare the two).

- ``prior_key(frames, hole, settings)``: the cache key, the SHA-256 of ``PRIOR_FORMAT``, the canonical JSON of
  ``settings`` (what ProPainter the prior comes from, ``ProPainterPriors.key_settings``), the arrays' shapes
  and dtypes and their raw bytes. Pure.
- ``PriorCache(compute, settings, store)``: ``get(frames, hole)`` returns the stored prior of that key or calls
  ``compute(frames, hole)`` and stores it; counts what it computed and reused (``summary()``).
- Where it is kept, chosen by the caller:

  - ``DiskStore(folder)`` for ``regdpo eval``: ``DIR/priors/{key}.npz``. Models run one after the other (one
    DiffuEraser in memory at a time) and an eval set can hold hundreds of clips (22 x 432 x 240 x 3 bytes =
    6.8 MB each, GBs for a split: too much to hold in memory); on disk a prior also survives an interrupted
    run and serves a later run that adds a model to the same ``DIR``. One uncompressed ``.npz`` (a stored
    zip: ``prior`` uint8 ``[T, H, W, 3]`` and its ``key``) per clip: lossless, ZIP's CRC-32 detects a
    damaged file (then the prior is recomputed and rewritten), and zlib would save only ~17 % of natural
    frames for ~0.3 s of CPU per clip. Written through an exclusive temporary file renamed into place
    (``safe_io``), never through a link, never outside the folder; a file whose key, shape or dtype
    differs is recomputed.
  - ``MemoryStore()`` for validation while training: the few dev clips are held in memory anyway.

- ``ProPainterPriors(config)``: ``compute`` of the models backend's ProPainter, loaded on first use (a
  resumed eval whose priors are all on disk never loads it) and once for all models.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..safe_read import file_sha256

PRIOR_FORMAT = 1
"""Part of every key: raise it when the prior a given ProPainter makes changes (regdpo's ProPainter driver)."""

PRIORS_DIR = "priors"
"""The cache's folder inside a ``regdpo eval`` output folder."""

PROPAINTER_FILES = ("raft-things.pth", "recurrent_flow_completion.pth", "ProPainter.pth")
_PRIOR_NAME = re.compile(r"^[0-9a-f]{64}\.npz$")


def prior_key(frames: np.ndarray, hole: np.ndarray, settings: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of what a prior depends on: the clip's frames and hole (shape, dtype, bytes) and
    ``settings`` (JSON-serialisable: the ProPainter it comes from)."""
    digest = hashlib.sha256()
    head = {"format": PRIOR_FORMAT, "settings": settings,
            "arrays": [[str(a.dtype), list(a.shape)] for a in (frames, hole)]}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for array in (frames, hole):
        digest.update(b"\0")
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------- where priors are kept


class MemoryStore:
    """Priors in a dict (validation: a few clips, held for the whole training run)."""

    where = "in memory"

    def __init__(self) -> None:
        self._priors: dict[str, np.ndarray] = {}

    def load(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        prior = self._priors.get(key)  # a copy out and a copy in: no caller changes what the next one gets
        return None if prior is None or prior.shape != tuple(shape) else prior.copy()

    def save(self, key: str, prior: np.ndarray) -> None:
        self._priors[key] = np.array(prior, dtype=np.uint8, copy=True)


class DiskStore:
    """Priors as ``{folder}/{key}.npz`` (see the module doc). The folder is made on the first save; a damaged,
    foreign or unreadable file is a miss (``damaged`` counts them) and is replaced by the next save."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.where = str(self.folder)
        self.damaged = 0
        self._cleaned = False

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a prior key: {key!r}")
        return self.folder / f"{key}.npz"

    def load(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        from ..errors import InputUnreadable
        from ..safe_read import read_input_bytes

        path = self.path(key)
        limit = int(np.prod(shape)) + (1 << 16)  # the array, its .npy header and the zip's own records
        try:
            data = read_input_bytes(path, "cached prior", follow_links=False, max_bytes=limit)
        except FileNotFoundError:
            return None
        except (InputUnreadable, OSError):
            self.damaged += 1
            return None
        prior = _read_npz(data, key, tuple(shape), limit)
        if prior is None:
            self.damaged += 1
        return prior

    def save(self, key: str, prior: np.ndarray) -> None:
        from ..safe_io import real_dir, remove_stale_temps, write_bytes_atomic

        real_dir(self.folder)
        if not self._cleaned:  # the temporaries of a killed run (a living writer's are locked and kept)
            remove_stale_temps(self.folder, _PRIOR_NAME.match)
            self._cleaned = True
        buffer = io.BytesIO()
        np.savez(buffer, prior=np.ascontiguousarray(prior, dtype=np.uint8), key=np.array(key))
        # no fsync: a file the OS lost in a crash reads as damaged (CRC-32) and is recomputed
        write_bytes_atomic(self.path(key), buffer.getvalue(), fsync=False)


def _read_npz(data: bytes, key: str, shape: tuple[int, ...], limit: int) -> np.ndarray | None:
    """The prior in ``data`` (an ``.npz`` of ``DiskStore.save``) when it is whole (ZIP's CRC-32), holds ``key``
    and a ``uint8`` array of ``shape``; else None. No member is inflated past ``limit`` bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sorted(archive.namelist()) != ["key.npy", "prior.npy"]:
                return None
            if any(archive.getinfo(name).file_size > limit for name in ("key.npy", "prior.npy")):
                return None
            stored_key = np.load(io.BytesIO(archive.read("key.npy")), allow_pickle=False)
            if not isinstance(stored_key, np.ndarray) or stored_key.shape != () or str(stored_key[()]) != key:
                return None
            prior = np.load(io.BytesIO(archive.read("prior.npy")), allow_pickle=False)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):  # truncated, CRC mismatch, not ours
        return None
    if not isinstance(prior, np.ndarray) or prior.shape != shape or prior.dtype != np.uint8:
        return None
    return prior


# ---------------------------------------------------------------------- the cache


class PriorCache:
    """``get(frames, hole)``: the prior of a clip, computed at most once per key and ``store``.

    ``compute(frames, hole) -> uint8 [T, H, W, 3]`` makes one (``ProPainterPriors`` or, in tests, a fake);
    ``settings``: what ProPainter it is (part of the key). ``computed`` / ``reused`` count the calls;
    ``compute_seconds`` is the time spent computing."""

    def __init__(self, compute: Callable[[np.ndarray, np.ndarray], np.ndarray], settings: Mapping[str, Any],
                 store: MemoryStore | DiskStore):
        self.compute, self.settings, self.store = compute, dict(settings), store
        self.computed = self.reused = 0
        self.compute_seconds = 0.0

    def get(self, frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
        key = prior_key(frames, hole, self.settings)
        prior = self.store.load(key, tuple(frames.shape))
        if prior is not None:
            self.reused += 1
            return prior
        started = time.perf_counter()
        prior = np.asarray(self.compute(frames, hole))
        self.compute_seconds += time.perf_counter() - started
        if prior.shape != frames.shape or prior.dtype != np.uint8:
            raise ValueError(f"the prior is {prior.dtype} {prior.shape}, expected uint8 {frames.shape}")
        self.computed += 1
        self.store.save(key, prior)
        return prior

    def counts(self) -> dict[str, int]:
        return {"computed": self.computed, "reused": self.reused}

    def summary(self) -> str:
        """One line for the log: ``ProPainter priors: 3 computed (12.4 s), 3 reused (eval/priors)``."""
        damaged = getattr(self.store, "damaged", 0)
        return (f"ProPainter priors: {self.computed} computed ({self.compute_seconds:.1f} s), {self.reused} reused "
                f"({self.store.where})" + (f"; {damaged} damaged cached file(s) recomputed" if damaged else ""))

    def release(self) -> None:
        """Free what ``compute`` holds (ProPainter's networks); the stored priors stay usable."""
        close = getattr(self.compute, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------- ProPainter (models at the edge)


class ProPainterPriors:
    """The models backend's ProPainter for a ``ModelsConfig``: ``__call__(frames, hole)`` is exactly the prior
    ``ModelsBackend.generate`` computes (same loader, same settings, under ``torch.inference_mode``). The
    networks load on the first call and stay until ``close()`` (a later call loads them again)."""

    def __init__(self, config: Any):
        from ..backends.models import propainter_settings, resolve_device, resolve_dtype

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.model_precision, self.device)
        self.propainter_settings = propainter_settings(config)
        self.runner: Any = None
        self.loads = 0

    def key_settings(self) -> dict[str, Any]:
        """What the prior depends on besides the clip: ProPainter's settings, the SHA-256 of its three weight
        files, the device kind and precision it runs at, torch's version and the checkout its code comes from."""
        from dataclasses import asdict

        import torch

        repo = self.config.diffueraser_repo
        folder = Path(self.config.propainter_model_dir)
        return {"propainter": asdict(self.propainter_settings),
                "weights": {name: file_sha256(folder / name, "weights file") for name in PROPAINTER_FILES},
                "device_type": self.device.type,
                "half": bool(self.dtype == torch.float16 and self.device.type != "cpu"),
                "torch": torch.__version__, "code": str(Path(repo).resolve()) if repo else None}

    def __call__(self, frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
        import torch

        if self.runner is None:
            from ..backends.models import load_propainter
            from ..backends.models_source import import_source

            self.runner = load_propainter(import_source(self.config.diffueraser_repo), self.config, self.device,
                                          self.dtype, self.propainter_settings)
            self.loads += 1
        with torch.inference_mode():
            return self.runner.run(frames, hole, {}, settings=self.propainter_settings)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
            import gc

            gc.collect()
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


def eval_prior_cache(config: Any, output_dir: str | os.PathLike) -> PriorCache:
    """``regdpo eval``'s cache: ``ProPainterPriors(config)`` stored under ``{output_dir}/priors/``."""
    compute = ProPainterPriors(config)
    return PriorCache(compute, compute.key_settings(), DiskStore(Path(output_dir) / PRIORS_DIR))
