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
      manifest.selected.json, selection.json, prune.json           written by `regdpo select` / `prune`
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
SELECTED_MANIFEST_FILE = "manifest.selected.json"
"""Written by ``regdpo select``: the manifest's entries with only their selected negatives."""
SELECTION_FILE = "selection.json"
"""Written by ``regdpo select``: settings, picks with reasons, summary (``regdpo prune`` reads it)."""
PRUNE_REPORT_FILE = "prune.json"
PREVIEW_DIR = "_preview"
DERIVED_OUTPUTS = (MANIFEST_FILE, FILTERED_MANIFEST_FILE, SELECTED_MANIFEST_FILE, SELECTION_FILE, PRUNE_REPORT_FILE,
                   AUDIT_JSON, AUDIT_HTML, PREVIEW_DIR, FAILED_DIR, STAGING_DIR)
"""Files and folders regdpo derives in a dataset root besides the videos (``--overwrite`` may delete them)."""
FRAME_EXT = ".png"
MASK_HOLE_VALUE = 255
"""Value of a hole pixel in a stored mask PNG (valid pixels are 0)."""

_VIDEO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MAX_VIDEO_NAME = 200
"""Longest video name: leaves room under the 255-byte file-name limit for ``_failed/{name}.json``,
staging (``{name}.xxxxxxxx``) and trash (``{name}.old.xxxxxxxx``) names."""

MAX_FRAMES = 100_000
"""Most frames a video may claim (a manifest claiming more is refused before anything is allocated)."""
MAX_SIDE = 16_384
MAX_FRAME_PIXELS = 1 << 26
"""Most pixels of one stored or source frame (64 Mpixel), checked from the header before decoding."""
MAX_IMAGE_BYTES = 256 << 20
"""Largest image file read (256 MiB); a bigger file is refused before it is read."""

def frame_name(index: int) -> str:
    """File name of frame ``index`` in every stream: ``00000.png``, ``00001.png``, ..."""
    if index < 0:
        raise ValueError(f"frame index must be >= 0, got {index}")
    return f"{index:05d}{FRAME_EXT}"


def frame_names(num_frames: int) -> list[str]:
    return [frame_name(i) for i in range(num_frames)]


def check_video_name(name: Any, where: str | os.PathLike | None = None) -> str:
    """Return ``name`` if it is a valid video folder name, else raise ``FormatError`` (a ``ValueError``).

    The one name rule, applied on every write and every read (manifests, meta.json): letters, digits and
    ``. _ + -``, starting with a letter or digit, no ``..``, at most ``MAX_VIDEO_NAME`` characters. So a
    name read from a file can never lead outside the dataset (``../x``, ``/etc``) or be too long to store.
    ``where``: the file the name was read from, named in the message.
    """
    prefix = f"{where}: " if where is not None else ""
    if not isinstance(name, str):
        raise FormatError(f"{prefix}video name {name!r} is not a string")
    if len(name) > MAX_VIDEO_NAME:
        raise FormatError(f"{prefix}video name {name[:40]!r}... is {len(name)} characters long, "
                          f"at most {MAX_VIDEO_NAME} are allowed")
    if not _VIDEO_NAME.match(name) or ".." in name or name in (FAILED_DIR, STAGING_DIR):
        raise FormatError(
            f"{prefix}invalid video name {name!r}: use letters, digits and . _ + - "
            "(starting with a letter or digit, no '..')"
        )
    return name


def check_dimensions(num_frames: Any, height: Any, width: Any, what: str) -> None:
    """Refuse frame counts and sizes that are not ints in range (before anything is allocated for them)."""
    for label, value, top in (("num_frames", num_frames, MAX_FRAMES), ("height", height, MAX_SIDE),
                              ("width", width, MAX_SIDE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise FormatError(f"{what}: {label} {value!r} is not an integer in 1..{top}")
    if height * width > MAX_FRAME_PIXELS:
        raise FormatError(f"{what}: {width}x{height} frames exceed {MAX_FRAME_PIXELS} pixels")


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
        check_video_name(data["name"], path)
        check_dimensions(data["num_frames"], data["height"], data["width"], str(path))
        known = {f for f in cls.__dataclass_fields__}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(meta.neg_types, list):
            raise FormatError(f"{path}: neg_types must be a list")
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
        for video in videos:  # names become paths: checked here, on every read of every manifest
            check_video_name(video.name, path)
            if not isinstance(video.neg_types, list) or not all(isinstance(t, str) for t in video.neg_types):
                raise FormatError(f"{path}: video {video.name}: neg_types must be a list of names")
        return cls(videos, list(data.get("failed", [])), list(data.get("skipped", [])), version)


# --------------------------------------------------------------------------- json helpers


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` through an exclusive temporary file and ``os.replace`` (atomic on POSIX)."""
    from .safe_io import write_text_atomic  # never through a planted link; temp removed on failure

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


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
    """``{root}/{name}/meta.json``; the name is checked first, and must be the one the record holds."""
    check_video_name(name)
    path = Path(root) / name / META_FILE
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(f"{path}: not a JSON object")
    meta = VideoMeta.from_dict(data, path=path)
    if meta.name != name:
        raise FormatError(f"{path}: records the name {meta.name!r}, its folder is {name!r}")
    return meta


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
        if p.is_dir() and not p.name.startswith((".", "_")) and _valid_name(p.name) and (p / META_FILE).is_file()
    )


def _valid_name(name: str) -> bool:
    try:
        check_video_name(name)
    except FormatError:
        return False
    return True


def failure_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """All records under ``_failed/`` (status "failed" or "skipped"), sorted by video name."""
    folder = Path(root) / FAILED_DIR
    if not folder.is_dir():
        return []
    return [read_json(p) for p in sorted(folder.glob("*.json"))]


PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
"""The last 12 bytes of every complete PNG (the IEND chunk): a truncated file lacks them."""


def video_stream_dirs(entry: "ManifestEntry | VideoMeta", neg_types: Sequence[str] | None = None) -> list[str]:
    """The stream folders a video holds (or the selected ``neg_types`` of it)."""
    return stream_dirs(entry.neg_types if neg_types is None else neg_types)


def validate_video_streams(
    root: str | os.PathLike, entry: ManifestEntry | VideoMeta, neg_types: Sequence[str] | None = None,
    *, headers: bool = True,
) -> None:
    """Check that every stream of a video has the entry's frame names and size.

    Lists the stream folders (each a real folder, not a link) and, with ``headers``, reads each
    image's header and its last 12 bytes (a truncated PNG lacks the IEND trailer); no pixel is
    decoded (``regdpo verify`` does that). Raises ``FormatError`` naming the video and the file.
    """
    from PIL import Image  # local: keeps `import regdpo.format` light

    check_video_name(entry.name)
    check_dimensions(entry.num_frames, entry.height, entry.width, f"video {entry.name}")
    video_dir = Path(root) / entry.name
    if video_dir.is_symlink() or not video_dir.is_dir():
        raise FormatError(f"video {entry.name}: {video_dir} is not a folder (or is a symbolic link)")
    expected = frame_names(entry.num_frames)
    for stream in video_stream_dirs(entry, neg_types):
        folder = video_dir / stream
        if folder.is_symlink() or not folder.is_dir():
            raise FormatError(f"video {entry.name}: stream folder {folder} is missing (or is a symbolic link)")
        found = sorted(p.name for p in folder.iterdir() if p.suffix == FRAME_EXT)
        if found != expected:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            detail = f"missing {folder / missing[0]}" if missing else f"unexpected {folder / extra[0]}"
            raise FormatError(
                f"video {entry.name}: stream {stream} has {len(found)} frames, expected "
                f"{entry.num_frames} ({detail})"
            )
        if not headers:
            continue
        for fname in expected:
            path = folder / fname
            try:
                if path.is_symlink():
                    raise OSError("a symbolic link, not a frame file")
                with open(path, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    nbytes = fh.tell()
                    if nbytes > MAX_IMAGE_BYTES:
                        raise OSError(f"{nbytes} bytes, more than {MAX_IMAGE_BYTES}")
                    fh.seek(max(0, nbytes - len(PNG_TRAILER)))
                    if fh.read() != PNG_TRAILER:
                        raise OSError("truncated (no PNG end marker)")
                    fh.seek(0)
                    with Image.open(fh) as img:
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
