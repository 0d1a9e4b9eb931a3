"""The on-disk dataset format: the single source of truth for writer and reader.

Layout (documented in ``docs/FORMAT.md``)::

    dpo_data/
      manifest.json                 global index, derived from the per-video records
      {video}/gt_frames/00000.png   positive clip, RGB PNG (lossless)
      {video}/masks/00000.png       L-mode PNG, 255 = hole, 0 = valid
      {video}/hallucination/ ...    negatives: same frame names and size as gt_frames,
      {video}/blur/ ...             composited onto the GT, so identical to it outside the hole
      {video}/flicker/ ...
      {video}/inpaint/ ...          (only when asked: the model's own standard result)
      {video}/inpaint_c1/ ...       another candidate of it (``--inpaint_candidates``): stream ``{stream}_c{k}``
      {video}/renoise_s0.50/ ...    (only when asked) the GT re-noised to a level and restored by the model
      {video}/blur_s0.50/ ...       a strength variant: stream ``{type}_s{strength:.2f}`` (strength 1.0: ``{type}``)
      {video}/checksums.sha256      SHA-256 of every frame file (``sha256sum`` format; written before meta.json)
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
from .safe_read import open_input
from .json_io import MAX_INDEX_BYTES, MAX_RECORD_BYTES, Fields

FORMAT_VERSION = 2
"""Version of the layout and of the ``meta.json`` / ``manifest.json`` schemas written.
Version 2 added strength variants (one stream per (type, strength)) and ``source_clip``."""

READABLE_VERSIONS: tuple[int, ...] = (1, 2)
"""Versions a reader accepts: version 1 is read as every negative at strength 1.0."""

NEG_TYPES: tuple[str, ...] = ("hallucination", "blur", "flicker", "inpaint", "renoise")
"""Negative types known to the format, in their canonical order."""

ON_POLICY_TYPES: frozenset[str] = frozenset({"inpaint", "renoise"})
"""Negative types that are a model's own result (on-policy), with no single designed defect: the audit judges
them by their quality score and band (and purity where measured), never by a defect verdict. A new on-policy
type is one more name here (``renoise``: the GT re-noised and restored by the model)."""

DEFAULT_NEG_TYPES: tuple[str, ...] = ("hallucination", "blur", "flicker")
"""The PRD's three types: what the generator makes when ``--neg_types`` is not given."""

FULL_STRENGTH = 1.0
"""Strength of a negative made as the PRD makes it (today's defect); its stream is the bare type."""

GT_DIR = "gt_frames"
MASK_DIR = "masks"
META_FILE = "meta.json"
CHECKSUMS_FILE = "checksums.sha256"
"""Per video: ``{sha256 hex}  {stream}/{frame}`` per frame file, sorted by path (``sha256sum -c`` reads it).
Written by the writer before ``meta.json``; absent in videos made before regdpo recorded checksums."""
MANIFEST_FILE = "manifest.json"
FAILED_DIR = "_failed"
LOGS_DIR = "_logs"
"""``regdpo launch``: one ``worker-K.log`` per worker process."""
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
                   AUDIT_JSON, AUDIT_HTML, PREVIEW_DIR, FAILED_DIR, LOGS_DIR, STAGING_DIR)
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


def check_strength(strength: float) -> float:
    """``strength`` in [0, 1] rounded to the 0.01 grid that stream names use, else ``ValueError``."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    return round(value, 2)


_STREAM = re.compile(r"^(?P<type>[a-z]+)(?:_s(?P<strength>[01]\.\d\d))?(?:_c(?P<candidate>[1-9]\d{0,2}))?$")

MAX_CANDIDATES = 64
"""Most candidates of one (type, strength) per video (``--inpaint_candidates``)."""


def check_candidate(candidate: Any) -> int:
    """A candidate index in ``0 .. MAX_CANDIDATES - 1``, else ``ValueError``."""
    if isinstance(candidate, bool) or not isinstance(candidate, int) or not 0 <= candidate < MAX_CANDIDATES:
        raise ValueError(f"candidate must be an integer in 0..{MAX_CANDIDATES - 1}, got {candidate!r}")
    return candidate


def stream_name(neg_type: str, strength: float = FULL_STRENGTH, candidate: int = 0) -> str:
    """Folder of the negative stream (type, strength, candidate): ``blur`` at 1.0, else ``blur_s0.50``;
    candidate ``k >= 1`` of it (another seed of the same run, ``--inpaint_candidates``) adds ``_c{k}``:
    ``inpaint_c1``. Candidate 0 is the bare name, so a one-candidate run is named as before."""
    check_neg_type(neg_type)
    strength = check_strength(strength)
    base = neg_type if strength == FULL_STRENGTH else f"{neg_type}_s{strength:.2f}"
    return base if check_candidate(candidate) == 0 else f"{base}_c{candidate}"


def parse_negative(stream: str) -> "NegativeStream":
    """The ``NegativeStream`` (type, strength, candidate) of a stream folder name (inverse of ``stream_name``)."""
    match = _STREAM.match(str(stream))
    if not match or match["type"] not in NEG_TYPES:
        raise ValueError(f"{stream!r} is not a negative stream name (type, type_sX.XX, optionally _cK; types "
                         f"{', '.join(NEG_TYPES)})")
    strength = FULL_STRENGTH if match["strength"] is None else check_strength(match["strength"])
    out = NegativeStream(match["type"], strength, int(match["candidate"] or 0))
    if out.stream != stream:
        raise ValueError(f"{stream!r} is not a canonical stream name (use {out.stream!r})")
    return out


def parse_stream(stream: str) -> tuple[str, float]:
    """``(neg_type, strength)`` of a stream folder name (its candidate: ``parse_negative``)."""
    parsed = parse_negative(stream)
    return parsed.type, parsed.strength


def check_stream(stream: str) -> str:
    parse_stream(stream)
    return stream


@dataclass(frozen=True, order=True)
class NegativeStream:
    """One negative of a video: its type, its strength in [0, 1], its candidate index (0 unless the
    generator drew several candidates of it, ``--inpaint_candidates``) and the folder that holds it."""

    type: str
    strength: float = FULL_STRENGTH
    candidate: int = 0

    @property
    def stream(self) -> str:
        return stream_name(self.type, self.strength, self.candidate)

    @property
    def group(self) -> tuple[str, float]:
        """What the candidates of one draw share: ``(type, strength)``."""
        return self.type, self.strength

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "strength", "stream"}``, plus ``"candidate"`` when it is not 0 (older records' bytes kept)."""
        out: dict[str, Any] = {"type": self.type, "strength": self.strength, "stream": self.stream}
        if self.candidate:
            out["candidate"] = self.candidate
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NegativeStream":
        """From ``{"type", "strength", "stream"[, "candidate"]}``; ``ValueError`` if they disagree."""
        if not isinstance(data, Mapping) or "type" not in data:
            raise ValueError(f"a negative must be an object with 'type', 'strength', 'stream', got {data!r}")
        out = cls(check_neg_type(str(data["type"])), check_strength(data.get("strength", FULL_STRENGTH)),
                  check_candidate(data.get("candidate", 0)))
        if "stream" in data and data["stream"] != out.stream:
            raise ValueError(f"negative {dict(data)}: stream should be {out.stream!r}")
        return out


def sort_streams(streams: Iterable[NegativeStream]) -> list[NegativeStream]:
    """Canonical order: types as in ``NEG_TYPES``, then strength descending (1.0 first), then candidate;
    duplicates dropped."""
    unique = dict.fromkeys(streams)
    return sorted(unique, key=lambda s: (NEG_TYPES.index(s.type), -s.strength, s.candidate))


def types_of(streams: Iterable[NegativeStream]) -> list[str]:
    """The negative types present, in canonical order."""
    present = {s.type for s in streams}
    return [t for t in NEG_TYPES if t in present]


def stream_dirs(streams: Iterable[str]) -> list[str]:
    """All stream folders of a video with these negative streams: gt, masks, then negatives.

    Negatives are named by stream (``blur``, ``blur_s0.50``); a bare type is its strength-1.0 stream."""
    return [GT_DIR, MASK_DIR, *(check_stream(s) for s in streams)]


def _read_streams(data: Mapping[str, Any], version: int, path: Any) -> list[NegativeStream]:
    """The negative streams of a v1 or v2 meta / manifest entry (v1: every type at strength 1.0)."""
    neg_types = data.get("neg_types")
    if not isinstance(neg_types, list):
        raise FormatError(f"{path}: 'neg_types' must be a list")
    for t in neg_types:
        if t not in NEG_TYPES:
            raise FormatError(f"{path}: unknown negative type {t!r}")
    raw = data.get("negatives") if version >= 2 else None
    if raw is None:
        return [NegativeStream(t) for t in neg_types]
    if not isinstance(raw, list):
        raise FormatError(f"{path}: 'negatives' must be a list of {{type, strength, stream}}")
    try:
        streams = [NegativeStream.from_dict(item) for item in raw]
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from None
    if len(set(streams)) != len(streams):
        raise FormatError(f"{path}: a negative stream is listed twice")
    if types_of(streams) != [t for t in NEG_TYPES if t in neg_types]:
        raise FormatError(f"{path}: 'neg_types' {neg_types} and the types of 'negatives' {types_of(streams)} differ")
    return streams


def _check_version(data: Mapping[str, Any], path: Any, what: str, fix: str) -> int:
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise FormatError(
            f"{path}: {what}format_version {version!r} is not supported by this regdpo "
            f"(reads {', '.join(map(str, READABLE_VERSIONS))}); {fix}"
        )
    return int(version)


# --------------------------------------------------------------------------- records


@dataclass
class VideoMeta:
    """Per-video record, stored as ``{video}/meta.json``.

    ``num_frames``, ``height`` and ``width`` describe every stream of the video.
    ``source`` says where the clip came from (dataset, path, native_fps, frame_stride,
    clip_fps, start_frame, ...), ``generator`` the settings that made it (backend,
    mask mode, ...), ``negatives`` one object per negative stream, in canonical order:
    ``{"type", "strength", "stream"}`` plus what the backend did (seeds, flicker segments,
    whether it is a classical approximation); ``neg_types`` the types present. ``timings``
    seconds per stage. ``source_clip`` is the clip this entry's mask was drawn on (the
    ``k = 0`` entry's name; ``--masks_per_clip``), ``mask_index`` its mask's index ``k``.
    ``reduced`` (only for a video the generator made at the backend's reduced settings after a device
    out-of-memory error): ``{"after": why, "settings": {setting: [normal, reduced]}}``;
    ``cuda_peak_memory_mb`` (only for videos made on CUDA): the backend's peak allocated GPU memory.
    Both keys are left out of ``meta.json`` when None, so other videos' bytes are unchanged.
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
    negatives: list[dict[str, Any]] = field(default_factory=list)  # code may pass {stream: info}
    timings: dict[str, float] = field(default_factory=dict)
    source_clip: str = ""
    mask_index: int = 0
    reduced: dict[str, Any] | None = None
    cuda_peak_memory_mb: float | None = None
    format_version: int = FORMAT_VERSION

    OPTIONAL_FIELDS = ("reduced", "cuda_peak_memory_mb")
    """Written only when set (not None)."""

    def __post_init__(self) -> None:
        if not self.source_clip:
            self.source_clip = self.name
        if isinstance(self.negatives, Mapping):  # {stream: info}, as code may build it
            self.negatives = [{**dict(info or {}), **parse_negative(stream).to_dict()}
                              for stream, info in self.negatives.items()]
        if not self.negatives:  # built in code from the types alone: every type at strength 1.0
            self.negatives = [NegativeStream(t).to_dict() for t in self.neg_types]
        else:
            self.neg_types = types_of(self.streams)

    @property
    def streams(self) -> list[NegativeStream]:
        return [NegativeStream.from_dict(n) for n in self.negatives]

    def info(self, stream: str) -> dict[str, Any]:
        """The record of one negative stream (``{}`` when absent)."""
        return next((n for n in self.negatives if n.get("stream") == stream), {})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not (k in self.OPTIONAL_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | os.PathLike = "meta.json") -> "VideoMeta":
        if not isinstance(data, Mapping):
            raise FormatError(f"{path}: not a JSON object")
        version = _check_version(data, path, "", "regenerate the data or upgrade regdpo")
        required = ("name", "num_frames", "height", "width", "neg_types")
        missing = [k for k in required if k not in data]
        if missing:
            raise FormatError(f"{path}: missing field(s) {', '.join(missing)}")
        check_video_name(data["name"], path)
        check_dimensions(data["num_frames"], data["height"], data["width"], str(path))
        streams = _read_streams(data, version, path)
        check_meta_fields(Fields(data, str(path)), version)
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        reduced, peak = values.get("reduced"), values.get("cuda_peak_memory_mb")
        if reduced is not None and not (isinstance(reduced, Mapping) and isinstance(reduced.get("settings"), Mapping)):
            raise FormatError(f"{path}: 'reduced' must be an object with a 'settings' object, got {reduced!r:.80}")
        if peak is not None and (isinstance(peak, bool) or not isinstance(peak, (int, float)) or not peak >= 0):
            raise FormatError(f"{path}: 'cuda_peak_memory_mb' must be a number >= 0, got {peak!r:.80}")
        if version == 1:  # negatives: {type: info}; every type at strength 1.0
            infos = data.get("negatives") or {}
            values["negatives"] = [{**s.to_dict(), **dict(infos.get(s.type) or {})} for s in streams]
        else:
            values["negatives"] = [{**dict(n), **s.to_dict()} for n, s in zip(data["negatives"], streams)]
        values["format_version"] = FORMAT_VERSION  # in memory (and when written again): the current schema
        return cls(**values)


PAIR_WEIGHT_RANGE = (0.0, 100.0)
"""``pair_weight`` of a selected manifest's negative (``regdpo select --weights``): a number in (0, 100]."""


def _weight_of(negative: Any, where: Any) -> dict[str, float]:
    """``{"pair_weight": w}`` of a manifest negative that carries one (checked), else ``{}``."""
    if not isinstance(negative, Mapping) or "pair_weight" not in negative:
        return {}
    w = negative["pair_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not PAIR_WEIGHT_RANGE[0] < w <= PAIR_WEIGHT_RANGE[1]:
        raise FormatError(f"{where}: pair_weight {w!r} of {negative.get('stream')!r} is not a number in "
                          f"({PAIR_WEIGHT_RANGE[0]:g}, {PAIR_WEIGHT_RANGE[1]:g}]")
    return {"pair_weight": float(w)}


MAX_SEED = 2**64 - 1
MAX_MASKS = 1_000_000
MAX_ATTEMPTS = 1_000_000
MAX_TEXT = 1 << 16
"""Longest prompt, reason or path string a record may hold (characters)."""


def check_meta_fields(f: Fields, version: int) -> None:
    """The fields of a ``meta.json`` that readers use beyond name, sizes and streams (``VideoMeta.from_dict``
    checks those): their types and ranges, ``JSONFileError`` naming the file and the field."""
    f.string("prompt", "", max_len=MAX_TEXT)
    f.integer("seed", 0, MAX_SEED, 0)
    clip = f.string("source_clip", "", max_len=MAX_VIDEO_NAME)
    if clip:
        check_video_name(clip, f.where)
    f.integer("mask_index", 0, MAX_MASKS, 0)
    if f.obj("source", {}):
        src = f.fields("source")
        for key in ("dataset", "id", "path", "prompt_source"):  # identities compared and hashed on --resume
            src.string(key, None, max_len=MAX_TEXT, nullable=True)
        src.number("clip_fps", 0.0, 1e6, None, nullable=True)
    if f.obj("generator", {}):
        f.fields("generator").obj("backend_settings", {})
    for key, value in (f.obj("timings", {}) or {}).items():
        Fields({key: value}, f"{f.where}: timings").number(key, 0.0)
    if version >= 2:
        for k, neg in enumerate(f.objects("negatives", [])):
            neg.array("segments", None, nullable=True)


def check_failure_record(data: Any, path: str | os.PathLike) -> dict[str, Any]:
    """A ``_failed/{video}.json`` record of the generator, its fields checked: ``name``, ``status``
    (``failed`` / ``skipped``), ``reason``, ``attempts`` (1..``MAX_ATTEMPTS``), ``dataset``, ``path``."""
    f = Fields(data, str(path))
    f.string("name", max_len=4 * MAX_VIDEO_NAME)
    f.string("status", choices=("failed", "skipped"))
    f.string("reason", "", max_len=MAX_TEXT)
    f.integer("attempts", 1, MAX_ATTEMPTS, 1)
    for key in ("dataset", "path"):
        f.string(key, None, max_len=MAX_TEXT, nullable=True)
    return dict(data)


@dataclass
class ManifestEntry:
    """One complete video as listed in ``manifest.json``.

    ``negatives``: ``{"type", "strength", "stream"}`` per negative stream (derived from
    ``neg_types`` at strength 1.0 when not given); ``neg_types`` is then set to their types.
    ``source_clip``: the source clip it belongs to (default: its own name).
    """

    name: str
    num_frames: int
    height: int
    width: int
    neg_types: list[str]
    prompt: str = ""
    negatives: list[dict[str, Any]] = field(default_factory=list)
    source_clip: str = ""

    def __post_init__(self) -> None:
        if not self.source_clip:
            self.source_clip = self.name
        if self.negatives:
            self.negatives = [{**NegativeStream.from_dict(n).to_dict(), **_weight_of(n, self.name)}
                              for n in self.negatives]
            self.neg_types = types_of(self.streams)
        else:
            self.negatives = [NegativeStream(t).to_dict() for t in self.neg_types]

    @property
    def streams(self) -> list[NegativeStream]:
        return [NegativeStream.from_dict(n) for n in self.negatives]

    @property
    def stream_names(self) -> list[str]:
        return [n["stream"] for n in self.negatives]

    @classmethod
    def from_meta(cls, meta: VideoMeta) -> "ManifestEntry":
        return cls(meta.name, meta.num_frames, meta.height, meta.width, list(meta.neg_types), meta.prompt,
                   [s.to_dict() for s in meta.streams], meta.source_clip)


@dataclass
class Manifest:
    """The global index, ``manifest.json``. Derived data: rebuild it with ``rebuild_manifest``."""

    videos: list[ManifestEntry]
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        counts = {t: sum(s["type"] == t for v in self.videos for s in v.negatives) for t in NEG_TYPES}
        counts = {t: n for t, n in counts.items() if n or t in DEFAULT_NEG_TYPES}  # the PRD's three always
        return {
            "format_version": FORMAT_VERSION,
            "num_videos": len(self.videos),
            "num_pairs": sum(len(v.negatives) for v in self.videos),
            "pairs_per_type": counts,
            "videos": [asdict(v) for v in self.videos],
            "failed": self.failed,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | os.PathLike = MANIFEST_FILE) -> "Manifest":
        if not isinstance(data, Mapping):
            raise FormatError(f"{path}: not a JSON object")
        version = _check_version(data, path, "manifest ",
                                 "rebuild it with `regdpo manifest` or upgrade regdpo")
        try:
            raw_videos = list(data["videos"])
        except (KeyError, TypeError) as exc:
            raise FormatError(f"{path}: malformed 'videos' list ({exc})") from exc
        videos = []
        for k, v in enumerate(raw_videos):
            if not isinstance(v, Mapping):
                raise FormatError(f"{path}: malformed 'videos' list (an entry is not an object)")
            where = f"{path}: video {str(v.get('name'))[:MAX_VIDEO_NAME]!r}"
            check_video_name(v.get("name"), path)
            # (num_frames, height, width: checked by each reader per entry, so that DPODataset's skip_invalid
            # drops one entry claiming 10**12 frames and keeps the others; `regdpo verify` refuses it)
            entry = Fields(v, f"{path}: videos[{k}]")
            entry.string("prompt", "", max_len=MAX_TEXT)
            if entry.string("source_clip", "", max_len=MAX_VIDEO_NAME):
                check_video_name(v["source_clip"], where)
            streams = _read_streams(v, version, where)
            known = {k: v[k] for k in ManifestEntry.__dataclass_fields__ if k in v and k != "negatives"}
            raw = v.get("negatives") if version >= 2 and isinstance(v.get("negatives"), list) else [{}] * len(streams)
            try:
                videos.append(ManifestEntry(**known, negatives=[{**s.to_dict(), **_weight_of(n, where)}
                                                                for s, n in zip(streams, raw)]))
            except TypeError as exc:
                raise FormatError(f"{path}: malformed 'videos' list ({exc})") from exc
            check_video_name(videos[-1].name, path)  # names become paths: checked on every read
        listed = Fields(data, str(path))
        failed = [dict(r.data) for r in listed.objects("failed", [])]
        skipped = [dict(r.data) for r in listed.objects("skipped", [])]
        return cls(videos, failed, skipped, FORMAT_VERSION)


# --------------------------------------------------------------------------- json helpers


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` through an exclusive temporary file and ``os.replace`` (atomic on POSIX)."""
    from .safe_io import write_text_atomic  # never through a planted link; temp removed on failure

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, max_bytes: int = MAX_INDEX_BYTES) -> Any:
    """The content of a JSON file, through regdpo's one JSON reader (``regdpo.json_io``: bounded size and
    nesting, numbers Python can hold; ``JSONFileError``, a ``FormatError``, naming it) and its one opener
    (``regdpo.safe_read``: a FIFO never blocks; ``InputUnreadable`` when it is not a regular file)."""
    from .json_io import read_json as read

    return read(path, max_bytes)


# --------------------------------------------------------------------------- reading


def read_video_meta(root: str | os.PathLike, name: str) -> VideoMeta:
    """``{root}/{name}/meta.json``; the name is checked first, and must be the one the record holds."""
    check_video_name(name)
    path = Path(root) / name / META_FILE
    data = read_json(path, MAX_RECORD_BYTES)
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
    return [check_failure_record(read_json(p, MAX_RECORD_BYTES), p) for p in sorted(folder.glob("*.json"))]


def format_checksums(digests: Mapping[str, str]) -> str:
    """``checksums.sha256`` text of ``{relative path: sha256 hex}``: one ``HEX  PATH`` line per file, sorted."""
    return "".join(f"{digests[path]}  {path}\n" for path in sorted(digests))


_CHECKSUM_LINE = re.compile(r"^(?P<hex>[0-9a-f]{64}) [ *](?P<path>[A-Za-z0-9._+-]+/\d{5,}\.png)$")


def parse_checksums(text: str, where: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256 hex}`` of a ``checksums.sha256`` text; ``FormatError`` naming ``where``
    and the line for a malformed or repeated line."""
    digests: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _CHECKSUM_LINE.match(line)
        if not match or match["path"] in digests:
            raise FormatError(f"{where}: line {number} is not 'SHA256  stream/NNNNN.png' (or repeats a file)")
        digests[match["path"]] = match["hex"]
    return digests


PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
"""The last 12 bytes of every complete PNG (the IEND chunk): a truncated file lacks them."""


def video_stream_dirs(entry: "ManifestEntry | VideoMeta", neg_types: Sequence[str] | None = None) -> list[str]:
    """The stream folders a video holds (or the selected negative streams ``neg_types`` of it:
    ``blur``, ``blur_s0.50``)."""
    return stream_dirs([s.stream for s in entry.streams] if neg_types is None else neg_types)


def validate_video_streams(
    root: str | os.PathLike, entry: ManifestEntry | VideoMeta, neg_types: Sequence[str] | None = None,
    *, headers: bool = True, video_dir: str | os.PathLike | None = None,
) -> None:
    """Check that every stream of a video has the entry's frame names and size.

    ``neg_types``: the negative streams to check (``blur``, ``blur_s0.50``; default: all of the
    entry's). Lists the stream folders (each a real folder, not a link) and, with ``headers``, reads each
    image's header and its last 12 bytes (a truncated PNG lacks the IEND trailer); no pixel is
    decoded (``regdpo verify`` does that). Raises ``FormatError`` naming the video and the file.
    ``video_dir``: the video's folder when it is not ``root/name`` (a staged entry).
    """
    from PIL import Image  # local: keeps `import regdpo.format` light

    if video_dir is None:
        video_dir = Path(root) / check_video_name(entry.name)
    video_dir = Path(video_dir)
    check_dimensions(entry.num_frames, entry.height, entry.width, f"video {entry.name}")
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
                with open_input(path, "frame file", follow_links=False) as fh:  # never blocks on a FIFO
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
