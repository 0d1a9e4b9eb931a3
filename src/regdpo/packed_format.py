"""The packed dataset format (``regdpo pack``): tar shards of one sample per source clip, and their index.

The single source of truth of the packed layout (documented in ``docs/FORMAT.md``, "Packed datasets")::

    OUT/
      index.json                  shards (name, bytes, SHA-256, samples), pair and sample counts
      shard-000000.tar ...        WebDataset-style tar: the members of one sample are ``{key}.{stream name}``
      .pack/                      work in progress of a running (or killed) `regdpo pack`; removed at the end

A sample (key ``{n:06d}``, the clip's place in the pack) holds, in the tar's member order:

    {key}.clip.json               the clip record: source clip, size, its entries with their meta.json and boxes
    {key}.e{k}.{stream}.{t}.png   entry k's negative ``stream`` at frame t, cropped to the hole's bounding box
    {key}.e{k}.mask.{t}.png       entry k's mask (the dataset's PNG bytes, 255 = hole)
    {key}.gt.{t}.png              the clip's GT frame t (the dataset's PNG bytes), once for every entry

A negative equals the GT outside the hole (the folder format's invariant), so only the bounding box of the
frame's hole is stored; a frame without a hole stores no crop (the negative is the GT). Reading composites
the crop onto the GT (``restore_negative``): the frame is exactly the original's. Everything is lossless PNG.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import format as fmt
from .errors import FormatError

PACKED_FORMAT = "regdpo-packed"
"""``index.json`` ``format``: tells a packed dataset from a ``dpo_data/`` folder."""
PACKED_VERSION = 1
INDEX_FILE = "index.json"
PACK_WORK_DIR = ".pack"
"""Shard records of a running pack (``shard-NNNNNN.json``), read by ``--resume``; removed when index.json is written."""
CLIP_MEMBER = "clip.json"
GT_STREAM = "gt"
MASK_STREAM = "mask"
PNG = "png"
KEY_DIGITS = 6

_SHARD_NAME = re.compile(r"^shard-(\d{6})\.tar$")
_MEMBER = re.compile(r"^(?:gt|e(?P<entry>\d+)\.(?P<stream>[a-z_0-9.]+?))\.(?P<frame>\d{5,})\.png$")


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def shard_number(name: str) -> int:
    match = _SHARD_NAME.match(name)
    if not match:
        raise FormatError(f"{name!r} is not a shard name (shard-NNNNNN.tar)")
    return int(match[1])


def sample_key(number: int) -> str:
    """The sample's key: its place in the pack, zero-padded (no dot: WebDataset splits members at the first)."""
    return f"{number:0{KEY_DIGITS}d}"


def gt_member(frame: int) -> str:
    return f"{GT_STREAM}.{fmt.frame_name(frame)}"


def mask_member(entry: int, frame: int) -> str:
    return f"e{entry}.{MASK_STREAM}.{fmt.frame_name(frame)}"


def crop_member(entry: int, stream: str, frame: int) -> str:
    return f"e{entry}.{stream}.{fmt.frame_name(frame)}"


# --------------------------------------------------------------------------- crops (pure)


Box = tuple[int, int, int, int]
"""``(y0, y1, x0, x1)``: rows ``y0:y1`` and columns ``x0:x1`` of a frame (half-open)."""


def hole_box(hole: np.ndarray) -> Box | None:
    """Bounding box of the hole pixels of one frame (``hole``: ``[H, W]``, nonzero = hole); ``None`` when
    the frame has no hole."""
    rows = np.flatnonzero(hole.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hole.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """``frame[y0:y1, x0:x1]`` (a view)."""
    y0, y1, x0, x1 = box
    return frame[y0:y1, x0:x1]


def outside_box_equal(negative: np.ndarray, gt: np.ndarray, box: Box | None) -> bool:
    """Whether ``negative`` equals ``gt`` everywhere outside ``box`` (everywhere when ``box`` is None): what
    makes the crop a lossless record of the negative."""
    if box is None:
        return bool(np.array_equal(negative, gt))
    y0, y1, x0, x1 = box
    return bool(np.array_equal(negative[:y0], gt[:y0]) and np.array_equal(negative[y1:], gt[y1:])
                and np.array_equal(negative[y0:y1, :x0], gt[y0:y1, :x0])
                and np.array_equal(negative[y0:y1, x1:], gt[y0:y1, x1:]))


def restore_negative(gt: np.ndarray, patch: np.ndarray | None, box: Box | None, out: np.ndarray | None = None) -> np.ndarray:
    """The negative frame: ``gt`` with ``patch`` pasted at ``box`` (``gt`` itself copied when ``box`` is None).
    Any channel order, as long as ``gt`` and ``patch`` share it. ``out``: where to write (default: a new array)."""
    if out is None:
        out = gt.copy()
    else:
        np.copyto(out, gt)
    if box is not None:
        y0, y1, x0, x1 = box
        if patch is None or patch.shape[:2] != (y1 - y0, x1 - x0):
            raise FormatError(f"crop of shape {None if patch is None else patch.shape[:2]} does not fit box {box}")
        out[y0:y1, x0:x1] = patch
    return out


# --------------------------------------------------------------------------- records


def check_box(value: Any, height: int, width: int, where: str) -> Box | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise FormatError(f"{where}: box {value!r:.60} is not [y0, y1, x0, x1]")
    y0, y1, x0, x1 = value
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise FormatError(f"{where}: box {value} is outside the {width}x{height} frame")
    return y0, y1, x0, x1


def check_clip_record(data: Any, where: str) -> dict[str, Any]:
    """A ``clip.json`` record, checked (names, sizes, streams, one box per frame per entry); ``FormatError``
    naming ``where`` otherwise. Returns it with each entry's ``meta`` as a ``VideoMeta`` under ``video``."""
    if not isinstance(data, dict) or data.get("format") != PACKED_FORMAT:
        raise FormatError(f"{where}: not a {PACKED_FORMAT} clip record")
    if data.get("format_version") != PACKED_VERSION:
        raise FormatError(f"{where}: packed format version {data.get('format_version')!r}, this regdpo reads "
                          f"{PACKED_VERSION}; upgrade regdpo")
    fmt.check_video_name(data.get("source_clip"), where)
    num_frames, height, width = data.get("num_frames"), data.get("height"), data.get("width")
    fmt.check_dimensions(num_frames, height, width, where)
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise FormatError(f"{where}: 'entries' must be a non-empty list")
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FormatError(f"{where}: entry {k} is not an object")
        meta = fmt.VideoMeta.from_dict(entry.get("meta") or {}, path=f"{where}: entry {k} meta")
        if (meta.num_frames, meta.height, meta.width) != (num_frames, height, width):
            raise FormatError(f"{where}: entry {meta.name} is {meta.width}x{meta.height}x{meta.num_frames}, "
                              f"the clip {width}x{height}x{num_frames}")
        boxes = entry.get("boxes")
        if not isinstance(boxes, list) or len(boxes) != num_frames:
            raise FormatError(f"{where}: entry {meta.name}: 'boxes' must list one box (or null) per frame")
        negatives = entry.get("negatives", [s.to_dict() for s in meta.streams])
        try:
            listed = sorted(fmt.NegativeStream.from_dict(n).stream for n in negatives)
            for n in negatives:
                fmt._weight_of(n, f"{where}: entry {meta.name}")  # the one check of a pair_weight
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{where}: entry {meta.name}: malformed 'negatives' ({exc})") from None
        if listed != sorted(s.stream for s in meta.streams):
            raise FormatError(f"{where}: entry {meta.name}: 'negatives' and its meta.json list other streams")
        entry["video"] = meta
        entry["boxes"] = [check_box(b, height, width, f"{where}: entry {meta.name}") for b in boxes]
    return data


def sample_members(record: Mapping[str, Any]) -> list[str]:
    """Every member (without the key) that a checked clip record's sample must hold, sorted."""
    members = [CLIP_MEMBER] + [gt_member(t) for t in range(record["num_frames"])]
    for k, entry in enumerate(record["entries"]):
        members += [mask_member(k, t) for t in range(record["num_frames"])]
        for stream in entry["video"].streams:
            members += [crop_member(k, stream.stream, t) for t, box in enumerate(entry["boxes"]) if box is not None]
    return sorted(members)


def index_sample(record: Mapping[str, Any]) -> dict[str, Any]:
    """What ``index.json`` lists of a sample: enough to plan an epoch without opening a shard."""
    entries = []
    for entry in record["entries"]:
        meta = entry["video"] if "video" in entry else fmt.VideoMeta.from_dict(entry["meta"])
        negatives = entry.get("negatives") or [s.to_dict() for s in meta.streams]
        entries.append({"name": meta.name, "prompt": meta.prompt, "negatives": negatives, "order": entry.get("order", 0)})
    return {"key": record["key"], "source_clip": record["source_clip"], "num_frames": record["num_frames"],
            "height": record["height"], "width": record["width"], "entries": entries,
            "pairs": sum(len(e["negatives"]) for e in entries)}


def build_index(shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``index.json`` of shard records (``name``, ``bytes``, ``sha256``, ``samples``), in shard order."""
    samples = [s for shard in shards for s in shard["samples"]]
    return {
        "format": PACKED_FORMAT,
        "format_version": PACKED_VERSION,
        "num_shards": len(shards),
        "num_samples": len(samples),
        "num_videos": sum(len(s["entries"]) for s in samples),
        "num_pairs": sum(s["pairs"] for s in samples),
        "total_bytes": sum(shard["bytes"] for shard in shards),
        "shards": [dict(shard, num_samples=len(shard["samples"]),
                        num_pairs=sum(s["pairs"] for s in shard["samples"])) for shard in shards],
    }


def check_index(data: Any, where: str) -> dict[str, Any]:
    """A read ``index.json``, checked (format, version, shard names, sample records); ``FormatError``."""
    if not isinstance(data, dict) or data.get("format") != PACKED_FORMAT:
        raise FormatError(f"{where}: not a packed dataset index (format {PACKED_FORMAT!r})")
    if data.get("format_version") != PACKED_VERSION:
        raise FormatError(f"{where}: packed format version {data.get('format_version')!r}, this regdpo reads "
                          f"{PACKED_VERSION}; upgrade regdpo")
    shards = data.get("shards")
    if not isinstance(shards, list):
        raise FormatError(f"{where}: 'shards' must be a list")
    keys: set[str] = set()
    for shard in shards:
        if not isinstance(shard, dict):
            raise FormatError(f"{where}: a shard record is not an object")
        shard_number(str(shard.get("name")))
        if not isinstance(shard.get("sha256"), str) or not isinstance(shard.get("bytes"), int):
            raise FormatError(f"{where}: shard {shard.get('name')}: 'sha256' and 'bytes' are required")
        if not isinstance(shard.get("samples"), list):
            raise FormatError(f"{where}: shard {shard.get('name')}: 'samples' must be a list")
        for sample in shard["samples"]:
            try:
                key = sample["key"]
                fmt.check_dimensions(sample["num_frames"], sample["height"], sample["width"], where)
                for entry in sample["entries"]:
                    fmt.check_video_name(entry["name"], where)
                    [fmt.NegativeStream.from_dict(n) for n in entry["negatives"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{where}: shard {shard['name']}: malformed sample record ({exc})") from None
            if key in keys:
                raise FormatError(f"{where}: sample key {key!r} is listed twice")
            keys.add(key)
    return data


def is_packed(index_data: Any) -> bool:
    return isinstance(index_data, dict) and index_data.get("format") == PACKED_FORMAT


def parse_member(name: str) -> tuple[str, int | None, str | None, int] | None:
    """``(kind, entry, stream, frame)`` of a sample member name without its key (``gt``, ``mask`` or ``crop``),
    ``None`` for ``clip.json`` or a name that is none of them."""
    match = _MEMBER.match(name)
    if not match:
        return None
    frame = int(match["frame"])
    if match["entry"] is None:
        return GT_STREAM, None, None, frame
    kind = MASK_STREAM if match["stream"] == MASK_STREAM else "crop"
    return kind, int(match["entry"]), None if kind == MASK_STREAM else match["stream"], frame


def dumps(data: Any) -> bytes:
    """JSON bytes as regdpo writes them into shards (sorted keys: deterministic)."""
    return (json.dumps(data, indent=None, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def streams_of(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return [n["stream"] for e in entries for n in e["negatives"]]
