"""Atomic writing of video entries and of the manifest.

A video entry is staged under ``{root}/.staging/``; ``meta.json`` is written last and the
folder is then renamed into place, so ``{root}/{video}/`` is either complete or absent,
whatever happens to the process. ``manifest.json`` is derived from the per-video records
and replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import format as fmt
from . import outputs
from .errors import FormatError, OutputUnwritable, RegdpoError, UsageError
from .safe_io import real_dir
from .safe_read import open_input
from .frames import composite, write_mask, write_rgb

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one run per folder is then up to the user)
    fcntl = None


_ENCODE_THREADS = min(4, os.cpu_count() or 1)
STAGING_ATTEMPTS = 20
"""Tries at creating a staging folder while other shards remove the empty ``.staging/`` (a race)."""
_encoder: ThreadPoolExecutor | None = None


def _encode_pool() -> ThreadPoolExecutor:
    """Threads for PNG encoding: ``cv2.imencode`` releases the GIL (about 2x on 2 cores)."""
    global _encoder
    if _encoder is None:
        _encoder = ThreadPoolExecutor(_ENCODE_THREADS, thread_name_prefix="regdpo-png")
    return _encoder


def open_lock_file(path: Path):
    """Open (create) a lock file without following a planted symbolic link (``O_NOFOLLOW``)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise FormatError(f"{path} is a symbolic link; regdpo never writes through links (remove it)") from None
        # the file system refuses (read-only, no permission): a data error (exit 1), as check_writable's
        raise OutputUnwritable(f"{path}: cannot create the lock file ({exc.strerror}); is the folder writable?") from None
    return os.fdopen(fd, "a+")


@contextlib.contextmanager
def idle_lock(root: str | os.PathLike):
    """Yield True while holding ``{root}/.lock`` exclusively (no generator or shard runs in ``root``),
    False at once when one does. ``regdpo manifest`` touches ``.staging/`` only when True."""
    root = Path(root)
    handle = open_lock_file(root / fmt.LOCK_FILE)
    try:
        if fcntl is None:
            yield False  # cannot tell: never touch another run's staging
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


@contextlib.contextmanager
def output_lock(root: str | os.PathLike, shard: str | None = None):
    """Hold the run lock of ``root`` for the duration; a conflicting holder gets a clear ``UsageError``.

    A whole run locks ``{root}/.lock`` exclusively. A shard (``shard="shard-K-of-N"``) locks
    ``.lock`` shared, so shards run side by side but never beside a whole run, and its own
    ``.lock.shard-K-of-N`` exclusively, so one shard never runs twice. ``flock`` locks die with
    the process: a killed run never leaves a stale lock.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, read-only, no permission
        raise FormatError(f"{root}: cannot create the output folder ({exc.strerror or exc})") from None
    locks = [(fmt.LOCK_FILE, shard is None)]
    if shard is not None:
        locks.append((f"{fmt.LOCK_FILE}.{shard}", True))
    handles = []
    recorded = []  # exclusive locks whose file holds our holder line: emptied again on release
    try:
        for name, exclusive in locks:
            handle = open_lock_file(root / name)
            handles.append(handle)
            if fcntl is None:
                continue
            try:
                fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                if exclusive:
                    _record_holder(handle)
                    recorded.append(handle)
            except BlockingIOError:
                holder = "another regdpo generator is writing into this folder"
                if shard is not None and name != fmt.LOCK_FILE:
                    holder = f"{shard} is already running in this folder"
                elif shard is not None:
                    holder = "a run without shards is writing into this folder"
                raise UsageError(
                    f"{root}: {holder} ({root / name} is locked); wait for it to finish or choose another "
                    f"--output_dir"
                ) from None
        yield
    finally:
        for handle in recorded:  # a finished run leaves an empty lock file: the same bytes run after run
            try:
                handle.truncate(0)
            except OSError:
                pass
        for handle in handles:
            handle.close()  # closing releases the lock


def _record_holder(handle) -> None:
    """Write who holds an exclusive run lock into its file (pid, start time, command), for ``lock_holder``.

    The line is removed when the lock is released; one left by a killed process is never read (``lock_holder``
    reads the line only while the lock is held) and is replaced by the next holder."""
    import sys
    import time

    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {' '.join(sys.argv)[:500]}\n")
        handle.flush()
    except OSError:  # a full disk: the lock holds all the same
        pass


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the run lock file ``path`` now ("pid 1234, since 2026-12-06 20:51:00: regdpo generate ..."), or
    None when nobody does (the file may remain: a lock dies with its process)."""
    path = Path(path)
    if fcntl is None or path.is_symlink() or not path.is_file():
        return None
    try:
        with open_lock_file(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                pid, _, rest = handle.readline(1000).strip().partition(" ")
                day, _, rest = rest.partition(" ")
                clock, _, command = rest.partition(" ")
                if not pid.isdigit():
                    return "a process that did not say which"
                return f"pid {pid}, since {day} {clock} UTC: {command}"
            return None
    except (OSError, RegdpoError):
        return None


def clear_staging(root: str | os.PathLike, subdir: str | None = None) -> None:
    """Remove what an interrupted run left in ``.staging/`` (never a finished video), and the temporary files
    a killed command left of regdpo's own files (``outputs.remove_leftover_temps``).

    ``subdir``: only that shard's part (other shards may be writing beside it), and the trash of an
    interrupted ``--overwrite``. The caller holds the run lock (``output_lock`` or ``idle_lock``).
    """
    staging = Path(root) / fmt.STAGING_DIR
    if staging.is_symlink():
        raise FormatError(f"{staging} is a symbolic link; regdpo never writes through links (remove it)")
    outputs.clear_trash(Path(root))
    outputs.remove_leftover_temps(Path(root))  # .manifest.json.*.tmp ... of a killed command (never a live one's)
    shutil.rmtree(staging / subdir if subdir else staging, ignore_errors=True)


class VideoEntryWriter:
    """Write one video entry atomically.

    Usage::

        with VideoEntryWriter(root, "davis_bear") as w:
            w.write_gt(frames)              # uint8 [T,H,W,3] RGB
            w.write_masks(hole)             # bool [T,H,W], True = hole
            w.write_negative("blur", neg)   # composited onto the GT here
            w.commit(meta)                  # meta.json last, then rename into place

    Leaving the ``with`` block without ``commit`` (an exception) discards the staging folder.
    ``commit`` replaces an existing complete entry of the same name (e.g. made by a concurrent
    run); a folder of that name without ``meta.json`` is not regdpo's and is never touched.
    """

    def __init__(self, root: str | os.PathLike, name: str, staging_subdir: str | None = None):
        self.root = Path(root)
        self.name = fmt.check_video_name(name)
        self.final_dir = self.root / name
        self.staging_parent = self.root / fmt.STAGING_DIR
        if staging_subdir:  # one per shard, so that a shard clears only its own leftovers
            self.staging_parent = self.staging_parent / staging_subdir
        self.staging_dir = self.staging_parent / f"{name}.{uuid.uuid4().hex[:8]}"
        for attempt in range(STAGING_ATTEMPTS):
            try:
                real_dir(self.staging_parent)
                self.staging_dir.mkdir()
                break
            except FileNotFoundError:  # another shard's writer removed the empty .staging/ in between
                if attempt == STAGING_ATTEMPTS - 1:
                    raise
        self._gt: np.ndarray | None = None
        self._hole: np.ndarray | None = None
        self._negatives: list[str] = []
        self._committed = False

    # -- context manager
    def __enter__(self) -> "VideoEntryWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self._remove_empty_staging_root()

    def _remove_empty_staging_root(self) -> None:
        for folder in dict.fromkeys([self.staging_parent, self.root / fmt.STAGING_DIR]):
            try:
                folder.rmdir()
            except OSError:  # not empty (another writer, an old leftover) or already gone
                return

    # -- streams
    def _write_stream(self, stream: str, frames: np.ndarray, writer) -> None:
        folder = self.staging_dir / stream
        folder.mkdir()
        jobs = [_encode_pool().submit(writer, folder / fmt.frame_name(i), frame) for i, frame in enumerate(frames)]
        try:
            wait(jobs)  # all of them, so none writes into the staging folder after an abort removed it
        except BaseException:  # Ctrl-C / SIGTERM during the wait: still none may outlive the abort
            for job in jobs:
                job.cancel()
            wait(jobs)
            raise
        for job in jobs:
            job.result()  # re-raises the first error

    def write_gt(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.name}: GT must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
        self._gt = frames
        self._write_stream(fmt.GT_DIR, frames, write_rgb)

    def write_masks(self, hole: np.ndarray) -> None:
        hole = np.asarray(hole).astype(bool)
        if self._gt is not None and hole.shape != self._gt.shape[:3]:
            raise ValueError(f"{self.name}: masks {hole.shape} do not match GT {self._gt.shape[:3]}")
        self._hole = hole
        self._write_stream(fmt.MASK_DIR, hole, write_mask)

    def write_negative(self, neg_type: str, frames: np.ndarray, *, already_composited: bool = False,
                       strength: float = fmt.FULL_STRENGTH, candidate: int = 0) -> None:
        """Write a negative stream (type, strength, candidate; folder ``fmt.stream_name``), composited onto
        the GT with the stored mask (unless told it already is)."""
        stream = fmt.stream_name(neg_type, strength, candidate)
        if self._gt is None or self._hole is None:
            raise RuntimeError("write_gt and write_masks come before write_negative")
        frames = np.asarray(frames)
        if frames.shape != self._gt.shape or frames.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: {neg_type} negative is {frames.dtype} {frames.shape}, "
                f"GT is uint8 {self._gt.shape}"
            )
        if not already_composited:
            frames = composite(frames, self._gt, self._hole)
        self._negatives.append(stream)
        self._write_stream(stream, frames, write_rgb)

    def commit(self, meta: fmt.VideoMeta | Mapping[str, Any]) -> Path:
        """Write ``meta.json`` last and move the entry into place. Returns the final folder."""
        if isinstance(meta, Mapping):
            meta = fmt.VideoMeta.from_dict(dict(meta, format_version=fmt.FORMAT_VERSION))
        if meta.name != self.name:
            raise ValueError(f"meta name {meta.name!r} differs from writer name {self.name!r}")
        if self._gt is None or self._hole is None:
            raise RuntimeError(f"{self.name}: GT and masks must be written before commit")
        t, h, w = self._hole.shape
        if (meta.num_frames, meta.height, meta.width) != (t, h, w):
            raise ValueError(
                f"{self.name}: meta says {meta.num_frames} frames of {meta.width}x{meta.height}, "
                f"streams hold {t} of {w}x{h}"
            )
        listed = [s.stream for s in meta.streams]
        if sorted(listed) != sorted(self._negatives):
            raise ValueError(f"{self.name}: meta lists {listed}, written {self._negatives}")
        # the staged streams are complete (nothing removed them under us) before meta.json marks them so
        fmt.validate_video_streams(self.root, meta, headers=False, video_dir=self.staging_dir)
        write_checksums(self.staging_dir, fmt.video_stream_dirs(meta))  # before meta.json, fsync-ed
        fmt.write_json_atomic(self.staging_dir / fmt.META_FILE, meta.to_dict())
        _fsync_dir(self.staging_dir)
        exists = self.final_dir.exists() or self.final_dir.is_symlink()
        if exists and outputs.owned_video(self.final_dir) is None:
            raise fmt.FormatError(
                f"{self.final_dir} exists and is not a regdpo video (not provably: its {fmt.META_FILE} is missing, "
                f"unreadable or foreign, or it holds other files); move it away, it is never deleted"
            )
        if exists:  # a regdpo entry of the same name: replaced atomically
            trash = self.staging_parent / f"{self.name}.old.{uuid.uuid4().hex[:8]}"
            os.replace(self.final_dir, trash)
            os.replace(self.staging_dir, self.final_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.staging_dir, self.final_dir)
        _fsync_dir(self.root)
        self._committed = True
        self._remove_empty_staging_root()
        return self.final_dir


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    import hashlib

    with open_input(path, "frame file", follow_links=False) as fh:  # never blocks on a FIFO
        return hashlib.sha256(fh.read()).hexdigest()


def write_checksums(video_dir: Path, streams: list[str]) -> None:
    """Write ``{video_dir}/checksums.sha256``: the SHA-256 of every frame file of ``streams``."""
    digests = {f"{stream}/{frame.name}": file_sha256(frame)
               for stream in streams for frame in (video_dir / stream).iterdir() if frame.suffix == fmt.FRAME_EXT}
    from .safe_io import write_text_atomic

    write_text_atomic(video_dir / fmt.CHECKSUMS_FILE, fmt.format_checksums(digests))


def write_video_entry(
    root: str | os.PathLike,
    meta: fmt.VideoMeta,
    gt: np.ndarray,
    hole: np.ndarray,
    negatives: Mapping[str, np.ndarray],
) -> Path:
    """One-call form of ``VideoEntryWriter``: ``negatives`` maps stream names (``blur``,
    ``blur_s0.50``) to frames, composited onto ``gt`` with ``hole``."""
    with VideoEntryWriter(root, meta.name) as writer:
        writer.write_gt(gt)
        writer.write_masks(hole)
        for stream, frames in negatives.items():
            parsed = fmt.parse_negative(stream)
            writer.write_negative(parsed.type, frames, strength=parsed.strength, candidate=parsed.candidate)
        return writer.commit(meta)


def record_failure(root: str | os.PathLike, name: str, status: str, reason: str, **extra: Any) -> None:
    """Record that ``name`` was skipped (permanent, e.g. too short) or failed (may be retried)."""
    if status not in ("failed", "skipped"):
        raise ValueError(f"status must be 'failed' or 'skipped', got {status!r}")
    folder = real_dir(Path(root) / fmt.FAILED_DIR)
    fmt.write_json_atomic(folder / failure_file_name(name), {"name": name, "status": status, "reason": reason, **extra})


def failure_file_name(name: str) -> str:
    """``{name}.json``, bounded: a name too long for a file name gets a hash of the whole instead of its tail."""
    if len(name.encode("utf-8")) <= fmt.MAX_VIDEO_NAME:
        return f"{name}.json"
    import hashlib

    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
    return f"{name.encode('utf-8')[:fmt.MAX_VIDEO_NAME - 13].decode('utf-8', 'ignore')}-{digest}.json"


def read_failure(root: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The checked failure record of ``name`` (``format.check_failure_record``), None when there is none;
    ``FormatError`` naming the file when it cannot be used."""
    path = Path(root) / fmt.FAILED_DIR / failure_file_name(name)
    if not os.path.lexists(path):
        return None
    return fmt.check_failure_record(fmt.read_json(path, fmt.MAX_RECORD_BYTES), path)


def clear_failure(root: str | os.PathLike, name: str) -> None:
    (Path(root) / fmt.FAILED_DIR / failure_file_name(name)).unlink(missing_ok=True)


def rebuild_manifest(root: str | os.PathLike) -> fmt.Manifest:
    """Rebuild ``manifest.json`` from the per-video ``meta.json`` files and failure records."""
    root = Path(root)
    if not root.is_dir():
        raise fmt.FormatError(f"dataset root {root} does not exist or is not a folder")
    with open_lock_file(root / f"{fmt.LOCK_FILE}.manifest") as lock:
        if fcntl is not None:  # concurrent shards: each reads the folder and writes in turn, so the last
            fcntl.flock(lock, fcntl.LOCK_EX)  # write always saw every video committed before it
        return _rebuild_manifest_locked(root)


def _rebuild_manifest_locked(root: Path) -> fmt.Manifest:
    """Lists the complete videos; one whose ``meta.json`` is unreadable or whose streams are incomplete
    is listed under ``failed`` with the reason instead (it never stops the rebuild)."""
    videos, broken = [], []
    for name in fmt.complete_videos(root):
        try:
            meta = fmt.read_video_meta(root, name)
            fmt.validate_video_streams(root, meta, headers=False)
        except (fmt.FormatError, OSError) as exc:
            broken.append({"name": name, "status": "failed", "reason": f"not a complete video: {exc}"})
            continue
        videos.append(fmt.ManifestEntry.from_meta(meta))
    done = {v.name for v in videos} | {b["name"] for b in broken}
    records = [r for r in _readable_failure_records(root) if r.get("name") not in done]
    manifest = fmt.Manifest(
        videos=videos,
        failed=broken + [r for r in records if r.get("status") == "failed"],
        skipped=[r for r in records if r.get("status") == "skipped"],
    )
    fmt.write_json_atomic(root / fmt.MANIFEST_FILE, manifest.to_dict())
    return manifest


def _readable_failure_records(root: Path) -> list[dict[str, Any]]:
    """Failure records under ``_failed/``; a damaged one is passed over (it never stops a rebuild)."""
    folder = root / fmt.FAILED_DIR
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records.append(fmt.check_failure_record(fmt.read_json(path, fmt.MAX_RECORD_BYTES), path))
        except fmt.FormatError:
            continue
    return records


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
