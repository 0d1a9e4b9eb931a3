"""The on-disk dataset format: the single source of truth for writer and reader.

Layout (documented in ``docs/FORMAT.md``)::

    dpo_data/
      manifest.json                 global index, derived from the per-video records
      {video}/gt_frames/00000.png   positive clip, RGB PNG (lossless)
      {video}/masks/00000.png       L-mode PNG, 255 = hole, 0 = valid
      {video}/hallucination/ ...    negatives: same frame names and size as gt_frames,
      {video}/blur/ ...             composited onto the GT, so identical to it outside the hole
      {video}/flicker/ ...
      {video}/meta.json             per-video record (written last: its presence marks a complete video)
      _failed/{video}.json          failure / skip records of the generator
      audit.json, audit.html, manifest.filtered.json, _preview/   written by `regdpo audit` / `preview`
      .staging/                     work in progress; never read, removed by the next run
      .lock                         locked by the generator while it runs

Every name that a writer or reader uses comes from this module.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import FormatError

FORMAT_VERSION = 1
"""Version of the layout and of the ``meta.json`` / ``manifest.json`` schemas."""

NEG_TYPES: tuple[str, ...] = ("hallucination", "blur", "flicker")
"""Negative types known to the format, in their canonical order."""

GT_DIR = "gt_frames"
MASK_DIR = "masks"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
FAILED_DIR = "_failed"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
"""Held (``flock``) by a running generator, so two runs never write one folder."""
AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
FILTERED_MANIFEST_FILE = "manifest.filtered.json"
PREVIEW_DIR = "_preview"
DERIVED_OUTPUTS = (MANIFEST_FILE, FILTERED_MANIFEST_FILE, AUDIT_JSON, AUDIT_HTML, PREVIEW_DIR, FAILED_DIR, STAGING_DIR)
"""Files and folders regdpo derives in a dataset root besides the videos (``--overwrite`` may delete them)."""
FRAME_EXT = ".png"
MASK_HOLE_VALUE = 255
"""Value of a hole pixel in a stored mask PNG (valid pixels are 0)."""

_VIDEO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")




def frame_name(index: int) -> str:
    """File name of frame ``index`` in every stream: ``00000.png``, ``00001.png``, ..."""
    if index < 0:
        raise ValueError(f"frame index must be >= 0, got {index}")
    return f"{index:05d}{FRAME_EXT}"


def frame_names(num_frames: int) -> list[str]:
    return [frame_name(i) for i in range(num_frames)]


def check_video_name(name: str) -> str:
    """Return ``name`` if it is a valid video folder name, else raise ``ValueError``."""
    if not _VIDEO_NAME.match(name) or name in (FAILED_DIR, STAGING_DIR):
        raise ValueError(
            f"invalid video name {name!r}: use letters, digits and . _ + - "
            "(not starting with a dot or underscore)"
        )
    return name


def check_neg_type(neg_type: str) -> str:
    if neg_type not in NEG_TYPES:
        raise ValueError(f"unknown negative type {neg_type!r}; known: {', '.join(NEG_TYPES)}")
    return neg_type


def stream_dirs(neg_types: Iterable[str]) -> list[str]:
    """All stream folders of a video with these negatives: gt, masks, then negatives."""
    return [GT_DIR, MASK_DIR, *(check_neg_type(t) for t in neg_types)]


# --------------------------------------------------------------------------- records


@dataclass
class VideoMeta:
    """Per-video record, stored as ``{video}/meta.json``.

    ``num_frames``, ``height`` and ``width`` describe every stream of the video.
    ``source`` says where the clip came from (dataset, path, native_fps, frame_stride,
    clip_fps, start_frame, ...), ``generator`` the settings that made it (backend,
    mask mode, ...), ``negatives`` per negative type what the backend did (seeds,
    flicker segments, whether it is a classical approximation), ``timings`` seconds
    per stage.
    """

    name: str
    num_frames: int
    height: int
    width: int
    neg_types: list[str]
    prompt: str = ""
    seed: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    negatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | os.PathLike = "meta.json") -> "VideoMeta":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(
                f"{path}: format_version {version!r} is not supported by this regdpo "
                f"(supports {FORMAT_VERSION}); regenerate the data or upgrade regdpo"
            )
        required = ("name", "num_frames", "height", "width", "neg_types")
        missing = [k for k in required if k not in data]
        if missing:
            raise FormatError(f"{path}: missing field(s) {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        for t in meta.neg_types:
            if t not in NEG_TYPES:
                raise FormatError(f"{path}: unknown negative type {t!r}")
        return meta


@dataclass
class ManifestEntry:
    """One complete video as listed in ``manifest.json``."""

    name: str
    num_frames: int
    height: int
    width: int
    neg_types: list[str]
    prompt: str = ""

    @classmethod
    def from_meta(cls, meta: VideoMeta) -> "ManifestEntry":
        return cls(meta.name, meta.num_frames, meta.height, meta.width, list(meta.neg_types), meta.prompt)


@dataclass
class Manifest:
    """The global index, ``manifest.json``. Derived data: rebuild it with ``rebuild_manifest``."""

    videos: list[ManifestEntry]
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        counts = {t: sum(t in v.neg_types for v in self.videos) for t in NEG_TYPES}
        return {
            "format_version": self.format_version,
            "num_videos": len(self.videos),
            "num_pairs": sum(len(v.neg_types) for v in self.videos),
            "pairs_per_type": counts,
            "videos": [asdict(v) for v in self.videos],
            "failed": self.failed,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | os.PathLike = MANIFEST_FILE) -> "Manifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(
                f"{path}: manifest format_version {version!r} is not supported by this regdpo "
                f"(supports {FORMAT_VERSION}); rebuild it with `regdpo manifest` or upgrade regdpo"
            )
        try:
            videos = [ManifestEntry(**v) for v in data["videos"]]
        except (KeyError, TypeError) as exc:
            raise FormatError(f"{path}: malformed 'videos' list ({exc})") from exc
        return cls(videos, list(data.get("failed", [])), list(data.get("skipped", [])), version)


# --------------------------------------------------------------------------- json helpers


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from exc


# --------------------------------------------------------------------------- reading


def read_video_meta(root: str | os.PathLike, name: str) -> VideoMeta:
    path = Path(root) / name / META_FILE
    return VideoMeta.from_dict(read_json(path), path=path)


def load_manifest(root: str | os.PathLike, manifest_path: str | os.PathLike | None = None) -> Manifest:
    """Read ``manifest.json`` of a dataset root (or an explicit, e.g. filtered, manifest file)."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"dataset root {root} does not exist or is not a folder")
    path = Path(manifest_path) if manifest_path is not None else root / MANIFEST_FILE
    if not path.is_file():
        raise FormatError(
            f"{path}: no manifest; generate data first, or rebuild it with `regdpo manifest {root}`"
        )
    return Manifest.from_dict(read_json(path), path=path)


def complete_videos(root: str | os.PathLike) -> list[str]:
    """Names of the video folders under ``root`` that are complete (hold ``meta.json``), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and (p / META_FILE).is_file()
    )


def failure_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """All records under ``_failed/`` (status "failed" or "skipped"), sorted by video name."""
    folder = Path(root) / FAILED_DIR
    if not folder.is_dir():
        return []
    return [read_json(p) for p in sorted(folder.glob("*.json"))]


def validate_video_streams(
    root: str | os.PathLike, entry: ManifestEntry | VideoMeta, neg_types: Sequence[str] | None = None
) -> None:
    """Check that every stream of a video has the entry's frame names and size.

    Reads only image headers. Raises ``FormatError`` naming the video and the file.
    """
    from PIL import Image  # local: keeps `import regdpo.format` light

    video_dir = Path(root) / entry.name
    expected = frame_names(entry.num_frames)
    for stream in stream_dirs(entry.neg_types if neg_types is None else neg_types):
        folder = video_dir / stream
        if not folder.is_dir():
            raise FormatError(f"video {entry.name}: stream folder {folder} is missing")
        found = sorted(p.name for p in folder.iterdir() if p.suffix == FRAME_EXT)
        if found != expected:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            detail = f"missing {folder / missing[0]}" if missing else f"unexpected {folder / extra[0]}"
            raise FormatError(
                f"video {entry.name}: stream {stream} has {len(found)} frames, expected "
                f"{entry.num_frames} ({detail})"
            )
        for fname in expected:
            path = folder / fname
            try:
                with Image.open(path) as img:
                    size, mode = img.size, img.mode
            except Exception as exc:  # PIL raises several types for broken files
                raise FormatError(f"video {entry.name}: cannot read {path} ({exc})") from exc
            if size != (entry.width, entry.height):
                raise FormatError(
                    f"video {entry.name}: {path} is {size[0]}x{size[1]}, expected "
                    f"{entry.width}x{entry.height} (all streams must be pixel-aligned)"
                )
            if stream == MASK_DIR and mode not in ("L", "1", "P"):
                raise FormatError(f"video {entry.name}: mask {path} has mode {mode}, expected L")
