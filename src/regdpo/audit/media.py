"""Image tiles and video files for previews and report thumbnails.

Frames are RGB ``uint8 [H, W, 3]``; holes ``bool [H, W]`` (True = hole). MP4 files are H.264
made by the ffmpeg binary that ships inside the ``imageio-ffmpeg`` wheel (no system ffmpeg).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import UsageError
from ..safe_io import replacing

HOLE_TINT = np.array([255, 40, 40], np.float32)
"""Colour (RGB) of the hole overlay."""


def overlay_hole(frame: np.ndarray, hole: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``frame`` with the hole tinted red and outlined."""
    out = frame.astype(np.float32)
    out[hole] = (1 - alpha) * out[hole] + alpha * HOLE_TINT
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(hole.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    return out


def label_bar_height(tile_height: int) -> int:
    return int(np.clip(tile_height // 10, 14, 28)) // 2 * 2


def labelled(frame: np.ndarray, text: str, bar_height: int | None = None) -> np.ndarray:
    """``frame`` under a black bar holding ``text`` in white (bar height even)."""
    h, w = frame.shape[:2]
    bar_h = label_bar_height(h) if bar_height is None else bar_height
    bar = np.zeros((bar_h, w, 3), np.uint8)
    scale = bar_h / 30.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while tw > w - 4 and scale > 0.25:  # shrink long labels to fit narrow tiles
        scale *= 0.9
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(bar, text, (2, (bar_h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, frame], axis=0)


def hstack(tiles: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tiles of one height side by side with a black ``gap``."""
    if not tiles:
        raise ValueError("no tiles")
    h = tiles[0].shape[0]
    sep = np.zeros((h, gap, 3), np.uint8)
    parts: list[np.ndarray] = []
    for k, tile in enumerate(tiles):
        if tile.shape[0] != h:
            raise ValueError(f"tile {k} is {tile.shape[0]} px high, expected {h}")
        if k:
            parts.append(sep)
        parts.append(tile)
    return np.concatenate(parts, axis=1)


def vstack(rows: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows stacked, each padded on the right to the widest, with a black ``gap``."""
    width = max(r.shape[1] for r in rows)
    parts: list[np.ndarray] = []
    for k, row in enumerate(rows):
        if k:
            parts.append(np.zeros((gap, width, 3), np.uint8))
        pad = width - row.shape[1]
        parts.append(np.pad(row, ((0, 0), (0, pad), (0, 0))) if pad else row)
    return np.concatenate(parts, axis=0)


def resize_to_height(frame: np.ndarray, height: int, nearest: bool = False) -> np.ndarray:
    h, w = frame.shape[:2]
    if h == height:
        return frame
    width = max(1, int(round(w * height / h)))
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if height < h else cv2.INTER_CUBIC)
    return cv2.resize(frame, (width, height), interpolation=interp)


def pad_even(frame: np.ndarray) -> np.ndarray:
    """Pad with black to even height and width (needed by 4:2:0 video)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0))) if h % 2 or w % 2 else frame


def encode_png(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamp: deterministic), closing the figure."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def encode_jpeg(frame: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("JPEG encoding failed")
    return buf.tobytes()


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - dependency of regdpo
        raise UsageError("MP4 previews need the imageio-ffmpeg package: pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def write_mp4(
    path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float, crf: int = 12, pix_fmt: str = "yuv420p"
) -> None:
    """Encode RGB frames (one size) as H.264 (libx264, ``-crf``; 12 looks lossless for texture).

    ``yuv420p`` plays everywhere; ``yuv444p`` keeps full colour resolution. Frames are padded
    to even sizes. The output is deterministic for the same frames and settings.
    """
    if not frames:
        raise ValueError("no frames to encode")
    if pix_fmt not in ("yuv420p", "yuv444p"):
        raise UsageError(f"--pix-fmt {pix_fmt}: use yuv420p or yuv444p")
    first = pad_even(frames[0])
    h, w = first.shape[:2]
    path = Path(path)
    with replacing(path, ".mp4") as tmp:
        _run_ffmpeg(tmp, path, frames, fps, crf, pix_fmt, w, h)


def _run_ffmpeg(tmp: Path, path: Path, frames, fps, crf, pix_fmt, w, h) -> None:
    cmd = [
        ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-",
        "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(int(crf)), "-pix_fmt", pix_fmt,
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-movflags", "+faststart",
        str(tmp),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for frame in frames:
            frame = pad_even(frame)
            if frame.shape[:2] != (h, w):
                raise ValueError(f"{path}: frame size {frame.shape[:2]} differs from {(h, w)}")
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    status = proc.wait()
    if status != 0:
        raise ffmpeg_error(path, status, err)


def ffmpeg_error(path: Path, status: int, stderr: str) -> OSError:
    """The ``OSError`` naming ``path`` for an ffmpeg that ended with ``status``: out of space (ENOSPC / EDQUOT
    in its message) and a file-size limit (killed by SIGXFSZ, or EFBIG in its message) as those errnos, so the
    command says it in one line naming the file (exit 1), like every other write."""
    text = stderr.strip()
    if status == -getattr(signal, "SIGXFSZ", 25) or "File too large" in text:
        return OSError(errno.EFBIG, "File too large", str(path))
    if "No space left" in text:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    if "quota exceeded" in text.lower():
        return OSError(errno.EDQUOT, "Disk quota exceeded", str(path))
    reason = text.splitlines()[-1][-300:] if text else f"exit status {status}"
    return OSError(errno.EIO, f"ffmpeg failed ({reason})", str(path))


def write_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> None:
    """Animated GIF (256 colours per frame: for quick sharing, not for judging texture)."""
    from PIL import Image

    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for f in frames]
    path = Path(path)
    with replacing(path, ".gif") as tmp:
        try:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=int(round(1000 / fps)), loop=0)
        except OSError as exc:  # a full disk: Pillow's write names no file
            if exc.filename:
                raise
            raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path)) from exc
