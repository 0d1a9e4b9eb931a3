"""Freezing an eval set: choose sources per split, cut one clip per source, make or read its masks, write.

Sources come from ``regdpo.generate.sources`` (DAVIS, YouTube-VOS, ``--video_root``), in their deterministic
order, then shuffled by ``--seed``; each split takes the next usable sources, one clip per source, so a
scene is in one split only. A clip is ``nframes`` consecutive stored frames (stride 1: the source's own
frame rate, as ProPainter's evaluation uses every frame), starting at a seeded frame, resized to exactly
``width x height`` (INTER_AREA when shrinking, bicubic when enlarging).

Masks: ``stationary`` (default, ProPainter's protocol): one seeded free-form hole (``masks.random_masks``, 5-25 %
of the frame) held still over the clip; ``folder`` (``--masks FOLDER``): ``FOLDER/{source id}/`` holds the
source's mask images in frame order (white / > 127 = hole; one image = the same mask for every frame),
resized with nearest neighbour; sources without a mask folder are not candidates.

Everything is written into a staging folder beside ``OUT`` and renamed into place at the end, so ``OUT`` is
complete or absent.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from .. import format as fmt
from ..errors import FormatError, FrameReadError, UsageError
from ..frames import read_mask, stack_frames, write_mask, write_rgb
from ..generate.clips import WorkingSize, clip_indices, resize_frames, resize_labels
from ..generate.masks import random_masks
from ..generate.sources import SourceReader, VideoSource, list_images
from ..safe_io import real_dir
from ..seeding import rng
from ..safe_read import file_sha256
from .evalset import CLIPS_DIR, EVALSET_FILE, EVALSET_VERSION, PROTOCOL_NAME

STATIONARY_AREA = (0.05, 0.25)
"""Hole area range (fractions of the frame) of the default stationary masks."""


@dataclass(frozen=True)
class Protocol:
    nframes: int = 24
    height: int = 240
    width: int = 432
    seed: int = 0
    masks_folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": PROTOCOL_NAME, "nframes": self.nframes, "height": self.height,
                               "width": self.width, "frame_stride": 1, "seed": self.seed,
                               "masks": "folder" if self.masks_folder else "stationary"}
        if self.masks_folder:
            out["masks_folder"] = str(self.masks_folder)
        else:
            out["mask_area"] = list(STATIONARY_AREA)
        return out


def parse_splits(values: Sequence[str]) -> list[tuple[str, int]]:
    """``["dev:5", "test:20"]`` -> ``[("dev", 5), ("test", 20)]``; ``UsageError`` naming a bad one."""
    out: list[tuple[str, int]] = []
    for value in values:
        name, sep, count = value.partition(":")
        if not sep or not name or not count.strip().isdigit():
            raise UsageError(f"--split {value!r}: expected NAME:COUNT, e.g. test:20")
        try:
            fmt.check_video_name(name)
        except FormatError:
            raise UsageError(f"--split {value!r}: a split name is letters, digits and . _ + -") from None
        if int(count) < 1:
            raise UsageError(f"--split {value!r}: an empty split (give at least 1 clip)")
        if name in dict(out):
            raise UsageError(f"--split {name}: given twice")
        out.append((name, int(count)))
    if not out:
        raise UsageError("give at least one --split NAME:COUNT, e.g. --split dev:5 --split test:20")
    return out


def _mask_folder_files(folder: Path, source: VideoSource) -> list[Path]:
    sub = folder / source.source_id
    return list_images(sub) if sub.is_dir() else []


def _masks_from_folder(files: list[Path], indices: list[int], height: int, width: int) -> np.ndarray:
    if len(files) == 1:
        chosen = [files[0]] * len(indices)
    else:
        if max(indices) >= len(files):
            raise FrameReadError(f"{files[0].parent}: {len(files)} mask images, the clip needs frame {max(indices)}")
        chosen = [files[i] for i in indices]
    holes = stack_frames([read_mask(p).astype(np.uint8) for p in chosen], chosen)
    return resize_labels(holes, width, height).astype(bool)


def cut_clip(source: VideoSource, protocol: Protocol) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(GT ``uint8 [T, H, W, 3]``, hole ``bool [T, H, W]``, record) of ``source``'s eval clip.
    ``ValueError`` when the source is too short; ``FrameReadError`` when a frame cannot be read."""
    reader = SourceReader(source)
    r = rng(protocol.seed, "evalset", source.dataset, source.source_id)
    indices = clip_indices(reader.num_frames, protocol.nframes, 1, r)
    frames = reader.read(indices)
    src_h, src_w = frames.shape[1:3]
    gt = resize_frames(frames, WorkingSize(protocol.width, protocol.height, (0, 0, src_w, src_h)))
    if protocol.masks_folder is not None:
        files = _mask_folder_files(protocol.masks_folder, source)
        hole = _masks_from_folder(files, indices, protocol.height, protocol.width)
        mask_info: dict[str, Any] = {"mode": "folder", "folder": str(protocol.masks_folder / source.source_id),
                                     "images": len(files)}
    else:
        one, info = random_masks(1, protocol.height, protocol.width, r, area_range=STATIONARY_AREA)
        hole = np.repeat(one, protocol.nframes, axis=0)
        mask_info = {"mode": "stationary", "target_fraction": info["target_fraction"], "shapes": len(info["shapes"])}
    mask_info["hole_fraction"] = round(float(hole.mean()), 4)
    record = {
        "source": {"dataset": source.dataset, "id": source.source_id, "path": str(source.path),
                   "layout": source.layout, "native_fps": reader.native_fps},
        "start_frame": indices[0],
        "source_frames": reader.frame_labels(indices),
        "original_size": [int(src_w), int(src_h)],
        "mask": mask_info,
    }
    return gt, hole, record


def build_evalset(out: Path, sources: Sequence[VideoSource], splits: Sequence[tuple[str, int]], protocol: Protocol,
                  log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Write the eval set into ``out`` (which must not exist) and return its ``evalset.json`` data."""
    order = list(sources)
    if protocol.masks_folder is not None:
        order = [s for s in order if _mask_folder_files(protocol.masks_folder, s)]
        if not order:
            raise UsageError(f"--masks {protocol.masks_folder}: no sub-folder named after a source id holds mask "
                             f"images (expected {protocol.masks_folder}/<source id>/00000.png ...)")
    keys: dict[str, VideoSource] = {}
    for s in order:  # one clip per source: the same source found twice (a file and a folder) counts once
        keys.setdefault(f"{s.dataset}:{s.source_id}", s)
    order = list(keys.values())
    perm = rng(protocol.seed, "evalset", "order").permutation(len(order))
    queue = [order[i] for i in perm]
    wanted = sum(n for _, n in splits)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    real_dir(staging)
    clips: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    try:
        for split, count in splits:
            made = 0
            while made < count:
                if not queue:
                    raise UsageError(f"--split {split}:{count}: only {len(clips)} usable source(s) for the "
                                     f"{wanted} clips asked ({len(skipped)} skipped: "
                                     f"{'; '.join(s['reason'] for s in skipped[:3]) or 'none'}); "
                                     f"give more sources or fewer clips")
                source = queue.pop(0)
                try:
                    gt, hole, record = cut_clip(source, protocol)
                except (ValueError, FrameReadError, OSError) as exc:
                    if isinstance(exc, UsageError):
                        raise
                    skipped.append({"source": {"dataset": source.dataset, "id": source.source_id,
                                               "path": str(source.path)}, "reason": f"{source.name}: {exc}"})
                    log(f"skipped {source.name}: {exc}")
                    continue
                if not hole.any():
                    skipped.append({"source": {"dataset": source.dataset, "id": source.source_id},
                                    "reason": f"{source.name}: its mask has no hole pixel"})
                    continue
                files = _write_clip(staging, source.name, gt, hole)
                clips.append({"name": source.name, "split": split, **record, "files": files})
                made += 1
                log(f"{split}: {source.name} ({len(clips)}/{wanted})")
        data = {"evalset_version": EVALSET_VERSION, "created_by": f"regdpo {__version__}",
                "protocol": protocol.to_dict(), "splits": {name: n for name, n in splits},
                "clips": clips, "skipped": skipped}
        fmt.write_json_atomic(staging / EVALSET_FILE, data)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return data


def _write_clip(root: Path, name: str, gt: np.ndarray, hole: np.ndarray) -> dict[str, str]:
    files: dict[str, str] = {}
    for stream, frames, write in ((fmt.GT_DIR, gt, write_rgb), (fmt.MASK_DIR, hole, write_mask)):
        folder = real_dir(root / CLIPS_DIR / name / stream)
        for i, frame in enumerate(frames):
            path = folder / fmt.frame_name(i)
            write(path, frame)
            files[f"{CLIPS_DIR}/{name}/{stream}/{fmt.frame_name(i)}"] = file_sha256(path)
    return files
