"""Reading packed shards: open a shard (a local path or any fsspec URL: ``s3://``, ``gs://``, ``https://``),
iterate its samples with the ``webdataset`` library's tar iterators, and decode a sample's frames.

I/O at the edges: ``PackedSample`` holds a sample's member bytes and its checked clip record, and decodes
frames on demand (``cv2.imdecode``: BGR like ``regdpo.frames.decode_image``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO, Any, Iterator, Sequence

import cv2
import numpy as np

from . import packed_format as pf
from .errors import FormatError, FrameReadError, UsageError
from .json_io import MAX_INDEX_BYTES, parse_json
from .safe_read import open_input

cv2.setNumThreads(1)


def is_url(location: str) -> bool:
    return "://" in str(location)


def join(location: str, name: str) -> str:
    """``location/name`` for a folder path or a URL prefix."""
    return f"{str(location).rstrip('/')}/{name}"


def open_binary(location: str) -> IO[bytes]:
    """A readable binary stream of a local file or an fsspec URL (``OSError`` / fsspec's errors on failure)."""
    if not is_url(location):
        return open_input(location, "file")  # never blocks on a FIFO (regdpo.safe_read)
    import fsspec

    return fsspec.open(location, "rb").open()


def read_index(location: str) -> dict[str, Any]:
    """The checked ``index.json`` of a packed dataset folder or URL prefix; ``FormatError`` naming it."""
    path = join(location, pf.INDEX_FILE)
    try:
        with open_binary(path) as fh:
            text = fh.read(MAX_INDEX_BYTES + 1)
        if len(text) > MAX_INDEX_BYTES:
            raise FormatError(f"{path}: more than the {MAX_INDEX_BYTES} bytes an index may hold")
        data = parse_json(text, path)  # regdpo's one JSON reader: depth, huge numbers
    except FileNotFoundError:
        raise FormatError(f"{path}: not found (not a packed dataset: run `regdpo pack ROOT OUT`)") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return pf.check_index(data, path)


class HashingReader:
    """A read-only stream that hashes (SHA-256) and counts what is read through it."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.nbytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        self.nbytes += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) the rest of the stream: a tar's end blocks."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        self.raw.close()


def iter_raw_samples(stream: IO[bytes], url: str) -> Iterator[dict[str, Any]]:
    """``{"__key__": key, member: bytes, ...}`` per sample of a tar stream, in order (``webdataset``'s
    ``tar_file_iterator`` and ``group_by_keys``). A truncated or malformed tar raises (``tarfile.ReadError``,
    ``EOFError``, ``ValueError`` for a repeated member) when the iteration reaches it."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    def files():
        for item in tar_file_iterator(stream):
            item["__url__"] = url
            yield item

    yield from group_by_keys(files(), lcase=False)


def _decode(data: bytes, flags: int, where: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None:
        raise FrameReadError(f"{where}: corrupt or not an image")
    return image


@dataclass
class PackedSample:
    """One sample (one source clip) of a shard: its clip record and member bytes."""

    key: str
    record: dict[str, Any]
    members: dict[str, bytes]
    where: str  # "shard-000003.tar: sample 000042", for messages

    @classmethod
    def from_raw(cls, raw: dict[str, Any], shard: str) -> "PackedSample":
        """Check a raw sample: a clip record, and every member it implies (``FormatError`` naming the shard)."""
        key = str(raw.get("__key__"))
        where = f"{shard}: sample {key}"
        data = raw.get(pf.CLIP_MEMBER)
        if data is None:
            raise FormatError(f"{where}: no {pf.CLIP_MEMBER} member")
        record = parse_json(data, f"{where}: {pf.CLIP_MEMBER}")  # regdpo's one JSON reader
        record = pf.check_clip_record(record, where)
        if record.get("key") != key:
            raise FormatError(f"{where}: {pf.CLIP_MEMBER} records key {record.get('key')!r}")
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        expected = pf.sample_members(record)
        missing = sorted(set(expected) - set(members))
        if missing:
            raise FormatError(f"{where} (clip {record['source_clip']}): missing {len(missing)} member(s), first "
                              f"{key}.{missing[0]}")
        extra = sorted(set(members) - set(expected))
        if extra:
            raise FormatError(f"{where} (clip {record['source_clip']}): unexpected member {key}.{extra[0]}")
        return cls(key, record, members, where)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.record["entries"]

    def entry_index(self, video: str) -> int:
        for k, entry in enumerate(self.entries):
            if entry["video"].name == video:
                return k
        raise KeyError(video)

    def member(self, name: str) -> bytes:
        return self.members[name]

    def gt_bgr(self, frame: int) -> np.ndarray:
        return _decode(self.members[pf.gt_member(frame)], cv2.IMREAD_COLOR, f"{self.where}: {pf.gt_member(frame)}")

    def mask(self, entry: int, frame: int) -> np.ndarray:
        """The stored mask, ``uint8 [H, W]`` (255 = hole)."""
        name = pf.mask_member(entry, frame)
        return _decode(self.members[name], cv2.IMREAD_GRAYSCALE, f"{self.where}: {name}")

    def box(self, entry: int, frame: int) -> pf.Box | None:
        return self.entries[entry]["boxes"][frame]

    def crop_bgr(self, entry: int, stream: str, frame: int) -> np.ndarray | None:
        box = self.box(entry, frame)
        if box is None:
            return None
        name = pf.crop_member(entry, stream, frame)
        patch = _decode(self.members[name], cv2.IMREAD_COLOR, f"{self.where}: {name}")
        if patch.shape[:2] != (box[1] - box[0], box[3] - box[2]):
            raise FormatError(f"{self.where}: {name} is {patch.shape[1]}x{patch.shape[0]}, its box {list(box)}")
        return patch

    def negative_bgr(self, entry: int, stream: str, frame: int, gt_bgr: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """The negative frame, exactly as stored in the folder format: the crop composited onto the GT."""
        gt = self.gt_bgr(frame) if gt_bgr is None else gt_bgr
        return pf.restore_negative(gt, self.crop_bgr(entry, stream, frame), self.box(entry, frame), out)


def iter_shard(location: str, name: str) -> Iterator[PackedSample]:
    """The checked samples of shard ``name`` of a packed dataset, in order; the first problem raises
    (``FormatError`` / ``OSError`` / a tar error), naming the shard."""
    url = join(location, name)
    stream = open_binary(url)
    try:
        for raw in iter_raw_samples(stream, url):
            yield PackedSample.from_raw(raw, name)
    finally:
        stream.close()


def shard_locations(spec: Any) -> tuple[str, list[str] | None]:
    """``(dataset location, shard names or None for all)`` of ``args.dpo_shards``: a packed dataset folder or
    URL prefix (holding ``index.json``), or a list (or one brace pattern) of shard paths / URLs of one
    dataset, whose ``index.json`` is beside them."""
    if isinstance(spec, (str, bytes)) or hasattr(spec, "__fspath__"):
        spec = str(spec)
        if not spec.endswith(".tar"):
            return spec.rstrip("/"), None
        import braceexpand

        spec = list(braceexpand.braceexpand(spec))
    items: Sequence[str] = [str(s) for s in spec]
    if not items:
        raise UsageError("args.dpo_shards: no shard given")
    folders = {s.rsplit("/", 1)[0] if "/" in s else "." for s in items}
    if len(folders) != 1:
        raise UsageError(f"args.dpo_shards: shards of one packed dataset (one folder) expected, got {sorted(folders)}")
    names = [s.rsplit("/", 1)[-1] for s in items]
    for n in names:
        try:
            pf.shard_number(n)
        except FormatError:
            raise UsageError(f"args.dpo_shards: {n!r} is not a shard name (shard-NNNNNN.tar)") from None
    return folders.pop(), names


def sha256_of(location: str) -> tuple[str, int]:
    """SHA-256 hex and size of a file or URL, read as a stream."""
    reader = HashingReader(open_binary(location))
    try:
        reader.drain()
    finally:
        reader.close()
    return reader.sha256.hexdigest(), reader.nbytes

