"""``regdpo preview ROOT [--video NAME ...]``: side-by-side clips and a contact sheet.

Per video, ``{out}/{video}.mp4`` (and ``.gif`` with ``--gif``) shows, frame by frame,
GT | GT with the hole overlaid | each negative, labelled. ``{out}/contact_sheet.png`` holds the
first and middle frames of many videos, one row each. ``out`` is ``ROOT/_preview`` unless
``--output-dir``. MP4s are H.264 at ``--crf 12`` (visually lossless, to judge texture).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import format as fmt
from ..cli_types import MAX_FPS, integer, real
from ..errors import RegdpoError, UsageError
from ..safe_io import check_writable, real_dir, write_bytes_atomic
from ..frames import read_mask_clip, read_rgb_clip
from . import media
from .metrics import parse_segments

PREVIEW_DIR = fmt.PREVIEW_DIR
SHEET_FILE = "contact_sheet.png"
DEFAULT_FPS = 10.0
MAX_PREVIEW_SCALE = 16.0  # a 512 px frame becomes 8192 px
MAX_SHEET_HEIGHT = 2048
MAX_SHEET_VIDEOS = 10_000


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (e.g. dpo_data)")
    parser.add_argument("--video", action="append", default=None, metavar="NAME", help="preview this video (repeatable)")
    parser.add_argument("--max-videos", type=integer(1), default=None, metavar="N",
                        help="preview only the first N videos (default: all, or those given by --video)")
    parser.add_argument("--output-dir", default=None, help=f"where the files go (default ROOT/{PREVIEW_DIR})")
    parser.add_argument("--fps", type=real(0, MAX_FPS, lo_open=True), default=None,
                        help=f"playback rate (default: the clip's fps from meta.json, else {DEFAULT_FPS:g})")
    parser.add_argument("--scale", type=real(0, MAX_PREVIEW_SCALE, lo_open=True), default=1.0,
                        help="enlarge (nearest neighbour, keeps pixels crisp) or shrink the frames (default 1)")
    parser.add_argument("--crf", type=integer(0, 51), default=12, help="H.264 quality, lower = better (default 12)")
    parser.add_argument("--pix-fmt", choices=("yuv420p", "yuv444p"), default="yuv420p",
                        help="yuv420p plays everywhere; yuv444p keeps full colour resolution (default yuv420p)")
    parser.add_argument("--gif", action="store_true", help="also write an animated GIF per video")
    parser.add_argument("--no-mp4", action="store_true", help="do not write MP4 files")
    parser.add_argument("--sheet-videos", type=integer(0, MAX_SHEET_VIDEOS), default=48, metavar="N",
                        help="videos in the contact sheet (default 48; 0 = no sheet)")
    parser.add_argument("--sheet-height", type=integer(8, MAX_SHEET_HEIGHT), default=96, metavar="PX",
                        help="frame height in the contact sheet (default 96)")


def _scaled(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return frame
    height = max(2, int(round(frame.shape[0] * scale)))
    return media.resize_to_height(frame, height, nearest=scale > 1)


def _segment_of(meta: fmt.VideoMeta, t: int, stream: str = "flicker") -> int | None:
    segments = parse_segments(meta.info(stream).get("segments"))
    for k, (start, stop) in enumerate(segments or []):
        if start <= t < stop:
            return k
    return None


def load_video(root: Path, name: str) -> tuple[fmt.VideoMeta, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(meta, GT, hole, negatives) of one video, errors naming the file."""
    meta = fmt.read_video_meta(root, name)
    fmt.validate_video_streams(root, meta)
    names = fmt.frame_names(meta.num_frames)
    gt = read_rgb_clip([root / name / fmt.GT_DIR / n for n in names])
    hole = read_mask_clip([root / name / fmt.MASK_DIR / n for n in names])
    negatives = {s.stream: read_rgb_clip([root / name / s.stream / n for n in names]) for s in meta.streams}
    return meta, gt, hole, negatives


def tiles_for_frame(
    meta: fmt.VideoMeta, gt: np.ndarray, hole: np.ndarray, negatives: dict[str, np.ndarray], t: int,
    scale: float = 1.0, frame_label: bool = True,
) -> list[np.ndarray]:
    """Labelled tiles of frame ``t``: GT, GT + hole, then each negative stream in canonical order
    (``negatives`` maps stream names, ``blur`` or ``blur_s0.50``, to clips)."""
    suffix = f" f{t}" if frame_label else ""
    frames: list[tuple[np.ndarray, str]] = [(gt[t], "GT" + suffix), (media.overlay_hole(gt[t], hole[t]), "GT + hole")]
    for stream in fmt.sort_streams(fmt.parse_negative(s) for s in negatives):
        label = stream.stream
        seg = _segment_of(meta, t, stream.stream) if stream.type == "flicker" else None
        if seg is not None:
            label += f" seg {seg}"
        frames.append((negatives[stream.stream][t], label))
    scaled = [_scaled(f, scale) for f, _ in frames]
    bar = media.label_bar_height(scaled[0].shape[0])
    return [media.labelled(f, label, bar) for f, (_, label) in zip(scaled, frames)]


def preview_frames(meta, gt, hole, negatives, scale: float = 1.0) -> list[np.ndarray]:
    return [media.hstack(tiles_for_frame(meta, gt, hole, negatives, t, scale)) for t in range(gt.shape[0])]


def sheet_row(meta, gt, hole, negatives, height: int) -> np.ndarray:
    """Contact-sheet row: first and middle frame strips side by side, under the video name."""
    strips = []
    for t in sorted({0, gt.shape[0] // 2}):
        scale = height / gt.shape[1]
        strips.append(media.hstack(tiles_for_frame(meta, gt, hole, negatives, t, scale)))
    row = media.hstack(strips, gap=12)
    return media.labelled(row, meta.name, 18)


def run(args: argparse.Namespace) -> int:
    from ..progress import Progress
    from .runner import select_entries

    root = Path(args.root)
    if root.is_dir():  # before any work (a missing root is the usage error select_entries gives)
        check_writable(Path(args.output_dir) if args.output_dir else root / PREVIEW_DIR, "--output-dir")
    _, entries, source = select_entries(root, None, args.video, args.max_videos)
    if not entries:
        raise UsageError(f"no videos to preview in {source}")
    out = Path(args.output_dir) if args.output_dir else root / PREVIEW_DIR
    real_dir(out)
    rows: list[np.ndarray] = []
    written: list[str] = []
    failed: list[str] = []
    for entry in Progress(len(entries), "preview", "video").wrap(entries):
        try:
            meta, gt, hole, negatives = load_video(root, entry.name)
        except (RegdpoError, OSError) as exc:  # one bad video never stops the others
            failed.append(entry.name)
            print(f"regdpo preview: skipped {entry.name}: {exc}", file=sys.stderr)
            continue
        fps = args.fps or _clip_fps(meta) or DEFAULT_FPS
        if not args.no_mp4 or args.gif:
            frames = preview_frames(meta, gt, hole, negatives, args.scale)
            if not args.no_mp4:
                media.write_mp4(out / f"{entry.name}.mp4", frames, fps, args.crf, args.pix_fmt)
                written.append(f"{entry.name}.mp4")
            if args.gif:
                media.write_gif(out / f"{entry.name}.gif", frames, fps)
                written.append(f"{entry.name}.gif")
            del frames
        if len(rows) < args.sheet_videos:
            rows.append(sheet_row(meta, gt, hole, negatives, args.sheet_height))
        del gt, hole, negatives
    if rows:
        sheet = out / SHEET_FILE
        write_bytes_atomic(sheet, media.encode_png(media.vstack(rows, gap=8)), fsync=False)
        written.append(SHEET_FILE)
    print(f"wrote {len(written)} files to {out}: " + ", ".join(written[:6]) + (" ..." if len(written) > 6 else ""))
    if failed:
        print(f"regdpo preview: {len(failed)} video(s) could not be previewed: {', '.join(failed[:10])}",
              file=sys.stderr)
        return 1
    return 0


def _clip_fps(meta: fmt.VideoMeta) -> float | None:
    value: Any = meta.source.get("clip_fps")
    try:
        return float(value) if value and float(value) > 0 else None
    except (TypeError, ValueError):
        return None
