"""An eval set on disk: ``evalset.json`` and its clips; reading it back and proving it unchanged.

Layout (written by ``regdpo evalset``, ``regdpo.evaluation.evalset_build``)::

    OUT/evalset.json
    OUT/clips/{clip}/gt_frames/00000.png ...   RGB, lossless
    OUT/clips/{clip}/masks/00000.png ...       L, 255 = hole, 0 = valid (as in a dpo_data folder)

``evalset.json``: ``evalset_version``, ``protocol`` (``name`` = ``PROTOCOL_NAME``, ``nframes``, ``height``,
``width``, ``masks`` = ``stationary`` | ``folder``, ``mask_area``, ``frame_stride``, ``seed``), ``clips`` (per
clip: ``name``, ``split``, ``source`` {``dataset``, ``id``, ``path``, ...}, ``start_frame``,
``source_frames``, ``original_size``, ``mask``, ``files`` {relative path -> SHA-256}), ``skipped``.

A source is identified by ``source_key``: its dataset kind and its id (see ``regdpo.evaluation.exclude``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import format as fmt
from ..errors import FormatError, UsageError
from ..safe_read import file_sha256

EVALSET_FILE = "evalset.json"
CLIPS_DIR = "clips"
EVALSET_VERSION = 1
PROTOCOL_NAME = "regdpo-eval"
"""The protocol ``regdpo eval`` knows: fixed-size clips of consecutive source frames and their masks."""
MASK_PROTOCOLS = ("stationary", "folder")
SPLIT_NAMES_HINT = "dev, test"


def source_key(dataset: str, source_id: str) -> str:
    """The identity of a source video: ``{dataset}:{id}`` (``davis:bmx-trees``, ``ytvos:0a1b2c3d4e``,
    ``video:my_clip``), the same pair the generator records in every ``meta.json`` (``source.dataset``,
    ``source.id``)."""
    return f"{dataset}:{source_id}"


@dataclass(frozen=True)
class EvalClip:
    """One clip of an eval set (its record in ``evalset.json``)."""

    name: str
    split: str
    source: dict[str, Any]
    num_frames: int
    files: dict[str, str]

    @property
    def key(self) -> str:
        return source_key(str(self.source.get("dataset")), str(self.source.get("id")))

    def frame_files(self, root: Path, stream: str) -> list[Path]:
        return [root / CLIPS_DIR / self.name / stream / fmt.frame_name(i) for i in range(self.num_frames)]

    def digest(self) -> str:
        """SHA-256 over the clip's file hashes: what a result computed on this clip was computed on."""
        text = "\n".join(f"{k} {v}" for k, v in sorted(self.files.items()))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class EvalSet:
    root: Path
    data: dict[str, Any]
    clips: list[EvalClip]
    sha256: str

    @property
    def protocol(self) -> dict[str, Any]:
        return dict(self.data["protocol"])

    def split(self, name: str | None) -> list[EvalClip]:
        """The clips of split ``name`` (every clip for None); ``UsageError`` when it has none."""
        if name is None:
            chosen = list(self.clips)
        else:
            chosen = [c for c in self.clips if c.split == name]
        if not chosen:
            have = sorted({c.split for c in self.clips})
            raise UsageError(f"--split {name}: the eval set {self.root} has no clip in that split "
                             f"(its splits: {', '.join(have) or 'none'})")
        return chosen

    def source_keys(self) -> set[str]:
        return {c.key for c in self.clips}

    def read_clip(self, clip: EvalClip) -> tuple[np.ndarray, np.ndarray]:
        """(GT ``uint8 [T, H, W, 3]``, hole ``bool [T, H, W]``) of ``clip``."""
        from ..frames import read_mask_clip, read_rgb_clip

        gt = read_rgb_clip(clip.frame_files(self.root, fmt.GT_DIR))
        hole = read_mask_clip(clip.frame_files(self.root, fmt.MASK_DIR))
        return gt, hole.astype(bool)


def load_evalset(root: str | Path, flag: str = "EVALSET") -> EvalSet:
    """Read ``root/evalset.json``; ``FormatError`` naming the file when it is not an eval set of this version
    and protocol. Files are not hashed here (``verify_evalset``)."""
    root = Path(root)
    path = root / EVALSET_FILE
    if not root.is_dir():
        raise UsageError(f"{flag} {root}: folder not found")
    if not path.is_file():
        raise FormatError(f"{flag} {root}: no {EVALSET_FILE} (make one with `regdpo evalset`)")
    data = fmt.read_json(path)
    if not isinstance(data, dict):
        raise FormatError(f"{path}: not a JSON object")
    version = data.get("evalset_version")
    if version != EVALSET_VERSION:
        raise FormatError(f"{path}: eval set version {version!r}; this regdpo reads version {EVALSET_VERSION} "
                          f"(make the eval set again with this regdpo's `regdpo evalset`)")
    protocol = data.get("protocol")
    if not isinstance(protocol, dict) or protocol.get("name") != PROTOCOL_NAME:
        name = protocol.get("name") if isinstance(protocol, dict) else protocol
        raise FormatError(f"{path}: protocol {name!r} is not {PROTOCOL_NAME!r}, the one `regdpo eval` measures")
    for key in ("nframes", "height", "width"):
        if not isinstance(protocol.get(key), int) or protocol[key] < 1:
            raise FormatError(f"{path}: protocol field {key!r} is {protocol.get(key)!r}, not a positive integer")
    if protocol.get("masks") not in MASK_PROTOCOLS:
        raise FormatError(f"{path}: protocol masks {protocol.get('masks')!r} is not one of {', '.join(MASK_PROTOCOLS)}")
    clips = []
    seen: set[str] = set()
    try:
        for c in data["clips"]:
            name = fmt.check_video_name(c["name"], path)
            if name in seen:
                raise FormatError(f"{path}: clip {name!r} is listed twice")
            seen.add(name)
            files = {str(k): str(v) for k, v in dict(c["files"]).items()}
            clips.append(EvalClip(name, str(c["split"]), dict(c["source"]), int(protocol["nframes"]), files))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: malformed 'clips' list ({exc})") from None
    for clip in clips:
        expected = {f"{CLIPS_DIR}/{clip.name}/{s}/{fmt.frame_name(i)}" for s in (fmt.GT_DIR, fmt.MASK_DIR)
                    for i in range(clip.num_frames)}
        if set(clip.files) != expected:
            raise FormatError(f"{path}: clip {clip.name}: its file list does not match {protocol['nframes']} "
                              f"GT frames and masks")
    return EvalSet(root, data, clips, file_sha256(path))


def verify_evalset(evalset: EvalSet, clips: list[EvalClip] | None = None) -> None:
    """Hash every file of ``clips`` (default: all) against ``evalset.json``; ``FormatError`` naming the first
    file that is missing or differs."""
    for clip in evalset.clips if clips is None else clips:
        for rel, expected in sorted(clip.files.items()):
            path = evalset.root / rel
            if path.is_symlink() or not path.is_file():
                raise FormatError(f"{path}: missing from the eval set {evalset.root} (listed in {EVALSET_FILE})")
            if file_sha256(path) != expected:
                raise FormatError(f"{path}: changed since the eval set was made (its SHA-256 differs from "
                                  f"{EVALSET_FILE}); make the eval set again or restore the file")
