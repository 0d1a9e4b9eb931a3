"""What regdpo may delete in an output folder, and how it deletes it (``--overwrite``).

regdpo deletes only what it can prove it wrote:

- a video folder whose ``meta.json`` parses as a regdpo record holding the folder's own name, and
  which holds nothing but that record, its ``checksums.sha256`` and the stream folders the record lists,
  each holding only frame files (``00000.png``, ...);
- the derived outputs of ``regdpo.format.DERIVED_OUTPUTS`` (manifests, audit, preview, failure
  records, launch logs, staging), each of the kind regdpo writes (``_failed/`` only ``*.json``, ``_logs/``
  only ``*.log``, ``_preview/``
  only preview media, the manifest / audit files plain files).

Anything else (a user's ``train/`` split holding its own ``meta.json``, a file, a link) makes
``--overwrite`` refuse before anything is deleted. Deleting is atomic per entry: every entry is
first renamed into a trash folder under ``.staging/`` and only then removed, so an interrupted
``--overwrite`` leaves each video either whole or gone, and the trash is cleared by the next run.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Collection

from . import format as fmt
from .errors import FormatError

TRASH_PREFIX = "_trash-"
"""Folders ``.staging/_trash-xxxxxxxx/`` hold what ``--overwrite`` is deleting."""

_FRAME_FILE = re.compile(r"^\d{5,}\.png$")
_PREVIEW_SUFFIXES = (".mp4", ".gif", ".png")
_DERIVED_FILES = tuple(n for n in fmt.DERIVED_OUTPUTS
                       if n not in (fmt.FAILED_DIR, fmt.LOGS_DIR, fmt.PREVIEW_DIR, fmt.STAGING_DIR))


_TEMP_FILE = re.compile(r"^\.(?P<base>.+)\.(?:[0-9a-f]{12}|\d+)\.tmp(?:\.[a-z0-9]+)?$")
"""A temporary file of ``regdpo.safe_io`` (or of older versions: ``.{name}.{pid}.tmp``) that a killed
process left; it names the file it was to become."""


def _temp_of(name: str) -> str | None:
    match = _TEMP_FILE.match(name)
    return match.group("base") if match else None


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def is_lock(name: str) -> bool:
    return name == fmt.LOCK_FILE or name.startswith(fmt.LOCK_FILE + ".")


def owned_video(path: Path, extra_streams: Collection[str] = ()) -> fmt.VideoMeta | None:
    """The record of ``path`` when it is provably a regdpo video folder (see the module docstring), else None.

    ``extra_streams``: stream folders (of frame files only) the record no longer lists but that are allowed
    too: what an interrupted ``regdpo prune`` left after rewriting ``meta.json``."""
    if path.is_symlink() or not path.is_dir():
        return None
    try:
        meta = fmt.read_video_meta(path.parent, path.name)
    except (FormatError, OSError):
        return None
    streams = set(fmt.video_stream_dirs(meta)) | set(extra_streams)
    for child in path.iterdir():
        if child.name in (fmt.META_FILE, fmt.CHECKSUMS_FILE) and not child.is_symlink() and child.is_file():
            continue
        if child.name not in streams or child.is_symlink() or not child.is_dir():
            return None
        if any(not _FRAME_FILE.match(f.name) or f.is_symlink() or not f.is_file() for f in child.iterdir()):
            return None
    return meta


def is_regdpo_output(path: Path) -> bool:
    """Whether ``--overwrite`` may delete ``path`` (an entry of the output folder)."""
    name = path.name
    if path.is_symlink():
        return False
    if name == fmt.STAGING_DIR:
        return path.is_dir()
    if name == fmt.FAILED_DIR:
        return path.is_dir() and all(_plain_file(f) and (_temp_of(f.name) or f.name).endswith(".json")
                                     for f in path.iterdir())
    if name == fmt.LOGS_DIR:
        return path.is_dir() and all(f.suffix == ".log" and f.is_file() and not f.is_symlink()
                                     for f in path.iterdir())
    if name == fmt.PREVIEW_DIR:
        return path.is_dir() and all(_plain_file(f) and Path(_temp_of(f.name) or f.name).suffix in _PREVIEW_SUFFIXES
                                     for f in path.iterdir())
    if name in _DERIVED_FILES or _temp_of(name) in _DERIVED_FILES:
        return _plain_file(path)
    return owned_video(path) is not None


def entries(root: Path) -> list[Path]:
    """What is in the output folder, but the run locks (never deleted: others may be waiting on them)."""
    return sorted(p for p in root.iterdir() if not is_lock(p.name)) if root.is_dir() else []


def foreign_entries(root: Path) -> list[Path]:
    """Entries of ``root`` that regdpo cannot prove it wrote."""
    return [p for p in entries(root) if not is_regdpo_output(p)]


def remove_outputs(root: Path) -> int:
    """Delete every entry of ``root`` that regdpo wrote; returns how many. The caller holds the run lock.

    Each entry is renamed into ``.staging/_trash-xxxxxxxx/`` first (one atomic rename: a video is whole
    or gone), then the trash is removed.
    """
    staging = root / fmt.STAGING_DIR
    if staging.is_symlink():
        raise FormatError(f"{staging} is a symbolic link; regdpo never writes through links (remove it)")
    trash = staging / f"{TRASH_PREFIX}{uuid.uuid4().hex[:8]}"
    trash.mkdir(parents=True)
    moved = 0
    for path in entries(root):
        if path.name == fmt.STAGING_DIR or not is_regdpo_output(path):
            continue
        os.rename(path, trash / path.name)
        moved += 1
    shutil.rmtree(staging, ignore_errors=True)
    return moved


ROOT_FILES = frozenset(_DERIVED_FILES) | {"score.json"}
"""The files regdpo writes at a dataset's top (their temporaries are regdpo's to remove)."""


def remove_leftover_temps(root: Path) -> list[str]:
    """Remove the temporary files (``.{name}.{12 hex}.tmp``, ``regdpo.safe_io``) that a killed command left of
    regdpo's own files: at the top of ``root`` those of its derived files (``.prune.json.*.tmp``,
    ``.manifest.json.*.tmp``, ...), in ``_failed/`` those of failure records, in ``_preview/`` those of preview
    media. Nothing else: no other name, no other folder, no link; a temporary whose writer still runs is locked
    by it and left alone. Called by the commands that hold the dataset's lock (generate, prune, manifest).
    Returns the removed files, relative to ``root``."""
    from .safe_io import remove_stale_temps

    removed = remove_stale_temps(root, ROOT_FILES.__contains__)
    for folder, wanted in ((fmt.FAILED_DIR, lambda base: base.endswith(".json")),
                           (fmt.PREVIEW_DIR, lambda base: Path(base).suffix in _PREVIEW_SUFFIXES)):
        path = root / folder
        if path.is_dir() and not path.is_symlink():
            removed += [f"{folder}/{name}" for name in remove_stale_temps(path, wanted)]
    return removed


def clear_trash(root: Path) -> None:
    """Remove what an interrupted ``--overwrite`` left in its trash folders."""
    staging = root / fmt.STAGING_DIR
    if staging.is_symlink() or not staging.is_dir():
        return
    for path in staging.iterdir():
        if path.name.startswith(TRASH_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
