"""``regdpo pack ROOT OUT``: a dataset (or the selection of ``--manifest``) as tar shards for training at scale.

One sample per source clip: the clip's GT once, then every mask entry of the clip with its mask and its
negatives cropped to each frame's hole bounding box (``regdpo.packed_format``). The dataset's GT and mask
PNG bytes are stored as they are; crops are lossless PNG. Shards are cut at sample boundaries once they
reach ``--shard_size`` bytes.

Atomic and resumable: a shard is written under ``OUT/.pack/``, fsync-ed, its record
(``.pack/shard-NNNNNN.json``) written, and only then renamed into ``OUT``, so a shard in ``OUT`` is complete
(or absent). ``--resume`` keeps the complete shards of a killed run and packs the rest; ``index.json`` is
written last and ``.pack/`` removed. A video that cannot be packed (an unreadable frame, a negative that
differs from the GT outside the hole) is one line naming it, is left out, and the rest goes on (exit 1 at the
end). Same dataset and flags -> byte-identical shards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from . import format as fmt
from . import packed_format as pf
from .errors import FrameReadError, RegdpoError, UsageError
from .json_io import MAX_RECORD_BYTES, read_json
from .progress import Progress, logger, plural
from .safe_io import check_writable, open_new, real_dir, write_text_atomic
from .safe_read import read_input_bytes

cv2.setNumThreads(1)

DEFAULT_SHARD_SIZE = 1 << 30
CROP_PNG_COMPRESSION = 6
"""zlib level of the negatives' crop PNGs: packed once and read many times, so smaller beats faster to write."""
TAR_USER = "regdpo"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    """``1GB``, ``500MiB``, ``2e6``-free plain integers: bytes (argparse type; ``ArgumentTypeError``)."""
    match = _SIZE.match(str(text))
    unit = (match[2] or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1GB, 500MB, 1048576)")
    value = int(float(match[1]) * _UNITS[unit])
    if not 1 <= value <= 1 << 50:
        raise argparse.ArgumentTypeError(f"{text!r}: a shard size must be between 1 byte and 1 PiB")
    return value


# --------------------------------------------------------------------------- plan


@dataclass
class ClipPlan:
    """The entries (manifest entries, their selected streams) of one source clip, in mask order."""

    source_clip: str
    entries: list[fmt.ManifestEntry]


def plan_clips(manifest: fmt.Manifest) -> list[ClipPlan]:
    """The manifest's entries grouped by ``source_clip``, clips sorted by name, entries by name (``{clip}``
    first, then ``{clip}__m1`` ...): the pack order. Entries with no negative are left out."""
    groups: dict[str, list[fmt.ManifestEntry]] = {}
    for entry in manifest.videos:
        if entry.negatives:
            groups.setdefault(entry.source_clip, []).append(entry)
    return [ClipPlan(clip, sorted(entries, key=lambda e: (e.name != clip, e.name)))
            for clip, entries in sorted(groups.items())]


# --------------------------------------------------------------------------- reading one entry


class _Skip(RegdpoError):
    """An entry that cannot be packed: the message says why."""


def _read_png(path: Path, flags: int) -> tuple[bytes, np.ndarray]:
    """The file's bytes and its decoded image (``FrameReadError`` naming it)."""
    try:
        if path.is_symlink():
            raise FrameReadError(f"{path}: a symbolic link, not a frame file")
        data = read_input_bytes(path, "frame file", follow_links=False, max_bytes=fmt.MAX_IMAGE_BYTES)
    except FileNotFoundError:
        raise FrameReadError(f"{path}: file not found") from None
    except FrameReadError:  # not a regular file (regdpo.safe_read): already one line naming it
        raise
    except OSError as exc:
        raise FrameReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > fmt.MAX_IMAGE_BYTES or not data.startswith(b"\x89PNG\r\n\x1a\n") or not data.endswith(fmt.PNG_TRAILER):
        raise FrameReadError(f"{path}: not a complete PNG file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise FrameReadError(f"{path}: corrupt PNG")
    return data, image


def _encode_png(image: np.ndarray, where: str) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, CROP_PNG_COMPRESSION])
    if not ok:
        raise OSError(f"could not encode {where}")
    return buf.tobytes()


@dataclass
class _Clip:
    """The GT of a sample being built: its files' bytes and decoded frames (BGR)."""

    gt_bytes: list[bytes]
    gt_bgr: list[np.ndarray]


def _read_gt(root: Path, meta: fmt.VideoMeta) -> _Clip:
    folder = root / meta.name / fmt.GT_DIR
    read = [_read_png(folder / name, cv2.IMREAD_COLOR) for name in fmt.frame_names(meta.num_frames)]
    for (_, image), name in zip(read, fmt.frame_names(meta.num_frames)):
        if image.shape[:2] != (meta.height, meta.width):
            raise _Skip(f"{folder / name} is {image.shape[1]}x{image.shape[0]}, meta.json says {meta.width}x{meta.height}")
    return _Clip([d for d, _ in read], [i for _, i in read])


def _gt_matches(root: Path, meta: fmt.VideoMeta, clip: _Clip) -> bool:
    """Whether the entry's GT files are byte-identical to the sample's (the K entries of a clip are)."""
    folder = root / meta.name / fmt.GT_DIR
    for name, data in zip(fmt.frame_names(meta.num_frames), clip.gt_bytes):
        try:
            if read_input_bytes(folder / name, "frame file", follow_links=False) != data:
                return False
        except OSError:
            return False
    return True


def _pack_entry(root: Path, entry: fmt.ManifestEntry, index: int, clip: _Clip, order: int = 0
                ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The clip-record entry and the members (mask bytes, negative crops) of one mask entry; ``_Skip`` /
    ``FormatError`` / ``FrameReadError`` naming the file when it cannot be packed losslessly."""
    meta = fmt.read_video_meta(root, entry.name)
    wanted = set(entry.stream_names)
    have = {s.stream for s in meta.streams}
    if not wanted <= have:
        raise _Skip(f"{root / entry.name / fmt.META_FILE} lists no stream {sorted(wanted - have)[0]}")
    meta.negatives = [n for n in meta.negatives if n["stream"] in wanted]  # the selection only
    meta.neg_types = fmt.types_of(meta.streams)
    fmt.validate_video_streams(root, meta, headers=False)
    folder = root / meta.name
    members: dict[str, bytes] = {}
    boxes: list[list[int] | None] = []
    for t, name in enumerate(fmt.frame_names(meta.num_frames)):
        mask_bytes, mask = _read_png(folder / fmt.MASK_DIR / name, cv2.IMREAD_UNCHANGED)
        if mask.ndim != 2 or mask.shape != (meta.height, meta.width):
            raise _Skip(f"{folder / fmt.MASK_DIR / name}: not a {meta.width}x{meta.height} grey mask")
        hole = mask != 0
        box = pf.hole_box(hole)
        boxes.append(None if box is None else list(box))
        members[pf.mask_member(index, t)] = mask_bytes
        gt = clip.gt_bgr[t]
        for stream in meta.streams:
            path = folder / stream.stream / name
            _, neg = _read_png(path, cv2.IMREAD_COLOR)
            if neg.shape != gt.shape:
                raise _Skip(f"{path} is {neg.shape[1]}x{neg.shape[0]}, the GT {gt.shape[1]}x{gt.shape[0]}")
            if not pf.outside_box_equal(neg, gt, box):
                raise _Skip(f"{path} differs from the GT outside the hole (not a regdpo negative; run regdpo verify)")
            if box is None:
                continue
            patch = pf.crop(neg, box)
            if (np.any(patch != pf.crop(gt, box), axis=-1) & ~pf.crop(hole, box)).any():
                raise _Skip(f"{path} differs from the GT outside the hole (not a regdpo negative; run regdpo verify)")
            members[pf.crop_member(index, stream.stream, t)] = _encode_png(patch, str(path))
    negatives = [dict(n) for n in entry.negatives]  # the manifest's: with pair_weight when it gives one
    return {"meta": meta.to_dict(), "boxes": boxes, "negatives": negatives, "order": order}, members


@dataclass
class Sample:
    """A built sample: its clip record (``key``, ...) and members (name without the key -> bytes)."""

    record: dict[str, Any]
    members: dict[str, bytes]
    videos: list[str]

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.members.values())


def build_samples(root: Path, plan: ClipPlan, first_key: int, failed: list[dict[str, str]],
                  order: dict[str, int] | None = None) -> Iterator[Sample]:
    """The samples of one source clip (one, unless an entry's GT differs from the clip's: then it gets its own).
    Entries that cannot be packed are appended to ``failed`` (``{name, reason}``) and logged."""
    pending = list(plan.entries)
    key = first_key
    while pending:
        clip: _Clip | None = None
        record_entries: list[dict[str, Any]] = []
        members: dict[str, bytes] = {}
        later: list[fmt.ManifestEntry] = []
        shape = None
        for entry in pending:
            try:
                if clip is None:
                    meta = fmt.read_video_meta(root, entry.name)
                    clip, shape = _read_gt(root, meta), (meta.num_frames, meta.height, meta.width)
                elif (entry.num_frames, entry.height, entry.width) != shape or not _gt_matches(
                        root, fmt.read_video_meta(root, entry.name), clip):
                    later.append(entry)
                    continue
                rec, mem = _pack_entry(root, entry, len(record_entries), clip, (order or {}).get(entry.name, 0))
            except (RegdpoError, OSError) as exc:
                reason = str(exc) if isinstance(exc, RegdpoError) else f"{exc.filename}: {exc.strerror or exc}"
                logger.warning("skipped %s: %s", entry.name, reason)
                failed.append({"name": entry.name, "reason": reason})
                if not record_entries:
                    clip = None  # the clip's GT came from a failed entry: the next entry starts afresh
                continue
            record_entries.append(rec)
            members.update(mem)
        if record_entries:
            assert clip is not None and shape is not None
            record = {"format": pf.PACKED_FORMAT, "format_version": pf.PACKED_VERSION, "key": pf.sample_key(key),
                      "source_clip": plan.source_clip, "num_frames": shape[0], "height": shape[1], "width": shape[2],
                      "entries": record_entries}
            members[pf.CLIP_MEMBER] = pf.dumps(record)
            for t, data in enumerate(clip.gt_bytes):
                members[pf.gt_member(t)] = data
            yield Sample(record, members, [e["meta"]["name"] for e in record_entries])
            key += 1
        pending = later


# --------------------------------------------------------------------------- shards


class _HashingWriter:
    """A write-only stream that hashes (SHA-256) and counts what is written through it."""

    def __init__(self, raw):
        import hashlib

        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.nbytes = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.nbytes += len(data)
        return self.raw.write(data)


class ShardWriter:
    """Writes one shard under ``OUT/.pack/`` with ``webdataset.TarWriter`` (fixed mtime, user, mode:
    byte-identical for the same samples), then commits it: fsync, record, rename into ``OUT``."""

    def __init__(self, out: Path, number: int):
        from webdataset import TarWriter

        self.out, self.number, self.name = out, number, pf.shard_name(number)
        self.tmp = out / pf.PACK_WORK_DIR / f"{self.name}.partial"
        with _suppress_missing():
            self.tmp.unlink()
        self.fh = os.fdopen(open_new(self.tmp), "wb")
        self.hashing = _HashingWriter(self.fh)
        self.tar = TarWriter(self.hashing, user=TAR_USER, group=TAR_USER, mode=0o444, encoder=False, mtime=0)
        self.samples: list[dict[str, Any]] = []
        self.payload = 0

    def add(self, sample: Sample) -> None:
        self.tar.write({"__key__": sample.record["key"], **sample.members})
        self.samples.append(pf.index_sample(sample.record))
        self.payload += sample.nbytes

    def commit(self) -> dict[str, Any]:
        self.tar.close()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        record = {"name": self.name, "bytes": self.hashing.nbytes, "sha256": self.hashing.sha256.hexdigest(),
                  "samples": self.samples}
        write_text_atomic(self.out / pf.PACK_WORK_DIR / f"{self.name}.json", json.dumps(record, sort_keys=True))
        os.replace(self.tmp, self.out / self.name)
        _fsync_dir(self.out)
        return record

    def abort(self) -> None:
        with _suppress_missing():
            self.tar.tarstream.fileobj = None  # nothing more reaches the file (tarfile flushes on __del__)
        with _suppress_missing():
            self.fh.close()
        with _suppress_missing():
            self.tmp.unlink()


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def completed_shards(out: Path) -> list[dict[str, Any]]:
    """Records of the shards a killed pack completed: the longest prefix shard-000000, -000001, ... whose
    record is in ``.pack/`` and whose tar is in ``OUT`` with the recorded size."""
    done = []
    for number in range(1 << 30):
        name = pf.shard_name(number)
        record_path = out / pf.PACK_WORK_DIR / f"{name}.json"
        shard = out / name
        try:
            record = read_json(record_path, MAX_RECORD_BYTES)  # regdpo's one JSON reader
            if shard.is_symlink() or shard.stat().st_size != record["bytes"]:
                break
        except (OSError, ValueError, KeyError, TypeError):  # (a FormatError is a ValueError)
            break
        done.append(record)
    return done


# --------------------------------------------------------------------------- the command


def pack(root: Path, out: Path, manifest_path: Path | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
         resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pack ``root`` into ``out``; returns the index (with ``failed``: the entries left out)."""
    if not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    manifest = fmt.load_manifest(root, manifest_path)
    plans = plan_clips(manifest)
    if not plans:
        raise UsageError(f"{manifest_path or root / fmt.MANIFEST_FILE}: no video with a negative to pack")
    if out.resolve() == root.resolve():
        raise UsageError(f"OUT {out} is the dataset root: pack into a folder of its own")
    check_writable(out, "output folder")
    if out.is_symlink():
        raise UsageError(f"OUT {out} is a symbolic link; regdpo never writes through links")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if existing and not resume:
        raise UsageError(f"OUT {out} is not empty; give --resume to finish a pack there, or an empty or new folder")
    if resume and (out / pf.INDEX_FILE).is_file() and not (out / pf.PACK_WORK_DIR).exists():
        index = shard_io_index(out)  # finished before: nothing to do
        index["failed"], index["seconds"] = [], 0.0
        return index
    real_dir(out)
    real_dir(out / pf.PACK_WORK_DIR)
    records = completed_shards(out) if resume else []
    done_videos = {e["name"] for r in records for s in r["samples"] for e in s["entries"]}
    listed = {e.name for p in plans for e in p.entries}
    unknown = sorted(done_videos - listed)
    if unknown:
        raise UsageError(f"OUT {out}: its shards hold {unknown[0]}, which this manifest does not list; "
                         "pack into a new folder")
    for extra in out.glob("shard-*.tar"):  # shards past the complete prefix: an interrupted run's, redone
        if pf.shard_number(extra.name) >= len(records):
            extra.unlink()
    next_key = 1 + max((int(s["key"]) for r in records for s in r["samples"]), default=-1)
    todo = [ClipPlan(p.source_clip, [e for e in p.entries if e.name not in done_videos]) for p in plans]
    todo = [p for p in todo if p.entries]
    failed: list[dict[str, str]] = []
    order = {e.name: i for i, e in enumerate(manifest.videos)}  # the folder reader's pair order follows it

    writer: ShardWriter | None = None
    started = time.monotonic()
    bar = Progress(total=sum(len(p.entries) for p in todo), desc="pack", unit="video", enabled=progress)
    try:
        for plan in todo:
            before = len(failed)
            for sample in build_samples(root, plan, next_key, failed, order):
                if writer is not None and writer.samples and writer.payload + sample.nbytes > shard_size:
                    records.append(writer.commit())
                    writer = None
                if writer is None:
                    writer = ShardWriter(out, len(records))
                writer.add(sample)
                next_key = int(sample.record["key"]) + 1
                bar.update(len(sample.videos))
            bar.update(len(failed) - before)
        if writer is not None:
            records.append(writer.commit())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    index = pf.build_index([{k: r[k] for k in ("name", "bytes", "sha256", "samples")} for r in records])
    index["failed"] = failed  # not recorded: a --resume tries them again
    fmt.write_json_atomic(out / pf.INDEX_FILE, index)
    _fsync_dir(out)
    shutil.rmtree(out / pf.PACK_WORK_DIR, ignore_errors=True)
    index["seconds"] = time.monotonic() - started
    return index


def shard_io_index(out: Path) -> dict[str, Any]:
    from .shard_io import read_index

    return read_index(str(out))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data)")
    parser.add_argument("out", help="output folder of the packed dataset (new or empty; with --resume, a killed pack's)")
    parser.add_argument("--manifest", default=None,
                        help="pack only the videos and negatives this manifest lists (e.g. manifest.selected.json)")
    parser.add_argument("--shard_size", type=parse_size, default=DEFAULT_SHARD_SIZE,
                        help="shard size in bytes, cut at sample boundaries (e.g. 1GB, 500MB; default 1GiB)")
    parser.add_argument("--resume", action="store_true", help="keep the complete shards of a killed pack, pack the rest")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar / lines")


def run(args: argparse.Namespace) -> int:
    root, out = Path(args.root), Path(args.out)
    manifest = Path(args.manifest) if args.manifest else None
    if manifest is not None and not manifest.is_file():
        raise UsageError(f"--manifest {manifest}: file not found")
    index = pack(root, out, manifest, args.shard_size, args.resume, progress=not args.no_progress)
    print(f"{out}: {plural(index['num_shards'], 'shard')}, {plural(index['num_samples'], 'sample')} "
          f"(source clips), {plural(index['num_videos'], 'video')}, {plural(index['num_pairs'], 'pair')}, "
          f"{index['total_bytes'] / 1e6:.1f} MB; {len(index['failed'])} video(s) not packed")
    return 1 if index["failed"] else 0
