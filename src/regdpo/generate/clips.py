"""Clip selection and the working size shared by every stream of a video.

Pure functions: frame strides from frame rates, clip positions, working sizes, resizing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE_MULTIPLE = 8
"""Working sizes are multiples of 8 (the VAE's downscale factor)."""


def frame_stride(native_fps: float, target_fps: float) -> int:
    """DiffuEraser's training loader rule: ``max(native_fps // target_fps, 1)``.

    DAVIS 24 fps -> 1, YouTube-VOS all-frames 30 fps -> 2, the sparse 6 fps layout -> 1 (at 15 fps).
    """
    if target_fps <= 0:
        raise ValueError(f"target fps must be > 0, got {target_fps}")
    return max(int(native_fps // target_fps), 1)


def clip_span(num_frames: int, stride: int) -> int:
    """Source frames a clip of ``num_frames`` at ``stride`` covers: ``(num_frames - 1) * stride + 1``."""
    return (num_frames - 1) * stride + 1


def clip_indices(available: int, num_frames: int, stride: int, rng: np.random.Generator) -> list[int]:
    """Indices of a clip: ``num_frames`` frames ``stride`` apart, start drawn from ``rng``.

    Raises ``ValueError`` when the source is too short (the caller records the skip).
    """
    span = clip_span(num_frames, stride)
    if available < span:
        raise ValueError(f"too short: {available} frames, a clip of {num_frames} frames at stride {stride} "
                         f"needs {span}")
    start = int(rng.integers(0, available - span + 1))
    return [start + k * stride for k in range(num_frames)]


@dataclass(frozen=True)
class WorkingSize:
    """Target ``width x height`` (multiples of 8) and the crop ``(x, y, w, h)`` of the source applied first."""

    width: int
    height: int
    crop: tuple[int, int, int, int]


def _round8(value: float) -> int:
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def working_size(src_width: int, src_height: int, resolution: int, center_crop: bool = False) -> WorkingSize:
    """Short side ``resolution`` with the aspect kept (long side rounded to a multiple of 8),
    or with ``center_crop`` the central square of the source scaled to ``resolution x resolution``."""
    if resolution <= 0 or resolution % SIZE_MULTIPLE:
        raise ValueError(f"resolution must be a positive multiple of {SIZE_MULTIPLE}, got {resolution}")
    if center_crop:
        side = min(src_width, src_height)
        x, y = (src_width - side) // 2, (src_height - side) // 2
        return WorkingSize(resolution, resolution, (x, y, side, side))
    crop = (0, 0, src_width, src_height)
    if src_width <= src_height:
        return WorkingSize(resolution, _round8(src_height * resolution / src_width), crop)
    return WorkingSize(_round8(src_width * resolution / src_height), resolution, crop)


def upscale_factor(size: WorkingSize) -> float:
    """How much ``size`` enlarges its source crop (the larger of the two axes' factors; < 1 = shrinking)."""
    _, _, w, h = size.crop
    return max(size.width / w, size.height / h)


def resize_frames(frames: np.ndarray, size: WorkingSize) -> np.ndarray:
    """Crop and resize RGB ``uint8 [T, H, W, 3]``: INTER_AREA when shrinking, bicubic when enlarging."""
    x, y, w, h = size.crop
    frames = frames[:, y:y + h, x:x + w]
    if (w, h) == (size.width, size.height):
        return np.ascontiguousarray(frames)
    shrinking = size.width <= w and size.height <= h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size.width, size.height), interpolation=interp) for f in frames])


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize integer label maps ``[T, h, w]`` with nearest neighbour (ids are never blended)."""
    if labels.shape[1:] == (height, width):
        return labels
    return np.stack([cv2.resize(l, (width, height), interpolation=cv2.INTER_NEAREST) for l in labels])
