"""Hole masks for clips: ``bool [T, H, W]``, True = hole. Pure numpy / OpenCV.

Three modes (``--mask_mode``):

- ``random``: 1-2 free-form shapes, each a smooth closed curve (closed Catmull-Rom spline through
  6-8 control points around a centre), either stationary or moving smoothly a few pixels per
  frame (speed 1-4 px at a 512 px short side, scaled with the frame) and bouncing off the
  border, as video-inpainting models are trained with. Hole area 5-25 % of the frame.
- ``hard``: one large (about 40-50 % of the frame), central, compact shape that keeps a margin
  from the border, stationary or drifting slowly (< 0.6 px per frame at 512 px).
- ``object``: the object annotation of a *different* video (so the GT under the hole is known),
  resized with nearest neighbour to the clip.

``--mask_area MIN MAX`` replaces the random / hard target range (fractions of the frame) and
``--mask_margin F`` keeps F of the width (height) free at the left and right (top and bottom)
edges; ``None`` keeps each mode's own (random: 5-25 %, no margin; hard: 40-50 %, margin 0.06).
``mask_motion`` measures how far a hole's centroid moves per frame.

Every function takes a ``numpy.random.Generator`` and is deterministic given it. The mask
returned here is exactly the stored one and the one the negative generators see.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from ..errors import FrameReadError
from ..format import MAX_IMAGE_BYTES
from ..safe_read import read_input_bytes
from .clips import resize_labels

MASK_MODES = ("random", "hard", "object")
_SUBPIXEL_SHIFT = 4  # fillPoly fixed-point bits: 1/16 px vertex precision for smooth motion
VOID_LABEL = 255
"""DAVIS / YouTube-VOS annotations mark unlabelled ("void") pixels with 255."""


# --------------------------------------------------------------------------- shapes


def catmull_rom_closed(points: np.ndarray, samples_per_segment: int = 12) -> np.ndarray:
    """Smooth closed curve through ``points`` ``[N, 2]`` (uniform Catmull-Rom); returns ``[N * s, 2]``."""
    p = np.asarray(points, dtype=np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[None, :, None]
    a, b, c, d = 2 * p1, p2 - p0, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
    curve = 0.5 * (a[:, None] + b[:, None] * t + c[:, None] * t**2 + d[:, None] * t**3)
    return curve.reshape(-1, 2)


def polygon_area(outline: np.ndarray) -> float:
    """Area enclosed by a closed outline ``[M, 2]`` (shoelace formula)."""
    x, y = outline[:, 0], outline[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def random_blob(
    rng: np.random.Generator,
    num_points: int,
    radius_range: tuple[float, float] = (0.55, 1.0),
    angle_jitter: float = 0.35,
) -> np.ndarray:
    """Outline of a smooth blob around the origin: control points at jittered, increasing angles
    with random radii, joined by a closed Catmull-Rom curve. Returns ``[M, 2]`` (x, y)."""
    step = 2 * math.pi / num_points
    angles = rng.uniform(0, 2 * math.pi) + step * (np.arange(num_points) + rng.uniform(-angle_jitter, angle_jitter,
                                                                                          num_points))
    radii = rng.uniform(*radius_range, num_points)
    control = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    outline = catmull_rom_closed(control)
    return outline - outline.mean(axis=0)


def rasterize(outlines: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Fill closed outlines (pixel coordinates, x then y) into one ``bool [H, W]`` hole."""
    canvas = np.zeros((height, width), np.uint8)
    scale = 1 << _SUBPIXEL_SHIFT
    pts = [np.round((o - 0.5) * scale).astype(np.int32) for o in outlines]
    cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return canvas.astype(bool)


@dataclass
class _MovingShape:
    outline: np.ndarray  # [M, 2] relative to centre, pixels
    centre: np.ndarray  # [2]
    speed: float  # px / frame (0 = stationary)
    heading: float  # radians
    turn: float  # std of the heading change per frame (radians)

    def half_extent(self) -> np.ndarray:
        return np.abs(self.outline).max(axis=0)


def _centre_box(shape: _MovingShape, width: int, height: int, margin: tuple[float, float]):
    hx, hy = shape.half_extent()
    lo = np.array([margin[0] + hx, margin[1] + hy])
    hi = np.array([width - margin[0] - hx, height - margin[1] - hy])
    mid = np.array([width / 2, height / 2])
    lo, hi = np.where(lo <= hi, lo, mid), np.where(lo <= hi, hi, mid)
    return lo, hi


def _animate(
    shapes: list[_MovingShape], num_frames: int, height: int, width: int, rng: np.random.Generator,
    margin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Move the shapes frame by frame (smoothly turning headings, bounces off the allowed box)."""
    holes = np.zeros((num_frames, height, width), bool)
    boxes = [_centre_box(s, width, height, margin) for s in shapes]
    for s, (lo, hi) in zip(shapes, boxes):
        s.centre = np.clip(s.centre, lo, hi)
    for t in range(num_frames):
        holes[t] = rasterize([s.outline + s.centre for s in shapes], height, width)
        for s, (lo, hi) in zip(shapes, boxes):
            if s.speed <= 0:
                continue
            s.heading += rng.normal(0.0, s.turn)
            c = s.centre + s.speed * np.array([math.cos(s.heading), math.sin(s.heading)])
            if c[0] < lo[0] or c[0] > hi[0]:
                c[0] = np.clip(2 * np.clip(c[0], lo[0], hi[0]) - c[0], lo[0], hi[0])
                s.heading = math.pi - s.heading
            if c[1] < lo[1] or c[1] > hi[1]:
                c[1] = np.clip(2 * np.clip(c[1], lo[1], hi[1]) - c[1], lo[1], hi[1])
                s.heading = -s.heading
            s.centre = c
    return holes


def _fraction_stats(holes: np.ndarray) -> dict[str, float]:
    per_frame = holes.reshape(holes.shape[0], -1).mean(axis=1)
    return {"mean": round(float(per_frame.mean()), 4), "min": round(float(per_frame.min()), 4),
            "max": round(float(per_frame.max()), 4)}


def mask_motion(holes: np.ndarray) -> float:
    """Mean displacement of the hole's centroid between consecutive frames, in pixels (frames without
    hole pixels are left out; 0.0 for a stationary hole or fewer than two such frames)."""
    counts = holes.reshape(holes.shape[0], -1).sum(axis=1)
    ys = np.arange(holes.shape[1], dtype=np.float64)
    xs = np.arange(holes.shape[2], dtype=np.float64)
    keep = counts > 0
    if keep.sum() < 2:
        return 0.0
    cy = (holes.sum(axis=2) @ ys)[keep] / counts[keep]
    cx = (holes.sum(axis=1) @ xs)[keep] / counts[keep]
    return round(float(np.hypot(np.diff(cx), np.diff(cy)).mean()), 4)


FIT_TWO_SHAPES_UP_TO = 0.2
"""With a given area or margin, a random hole above this fraction of the frame is one shape."""


def fit_outline(outline: np.ndarray, room: np.ndarray) -> np.ndarray:
    """``outline`` (around the origin) squeezed along the axes where its half extent exceeds ``room``
    ``[2]``, then widened along the other axis, as far as the room allows, to keep its area."""
    extent = np.abs(outline).max(axis=0)
    squeeze = np.minimum(1.0, room / extent)
    if (squeeze >= 1.0).all():
        return outline
    deficit = 1.0 / float(squeeze.prod())
    grow = room / (extent * squeeze)  # >= 1 on each axis
    gx = min(float(grow[0]), deficit)
    gy = min(float(grow[1]), deficit / gx)
    return outline * squeeze * np.array([gx, gy])


def random_masks(
    num_frames: int, height: int, width: int, rng: np.random.Generator,
    area_range: tuple[float, float] = (0.05, 0.25), margin_fraction: float = 0.0, fit: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Free-form random holes (see module doc), ``margin_fraction`` of each side kept free.

    ``fit``: every shape is made to fit inside the margin (``fit_outline``), so the measured area
    follows ``area_range`` (as far as the free box can hold it); without it (today's default) a large
    stretched shape on a wide frame may be cut by the frame's edge. Returns ``(hole bool [T, H, W], info)``."""
    target = rng.uniform(*area_range)
    num_shapes = 1 if rng.random() < 0.6 else 2
    shares = [1.0] if num_shapes == 1 else [s := rng.uniform(0.35, 0.65), 1.0 - s]
    if fit and target > FIT_TWO_SHAPES_UP_TO:  # two large shapes in the free box would mostly overlap
        shares = [1.0]
    moving = bool(rng.random() < 0.5)
    px_scale = min(height, width) / 512.0
    shapes, described = [], []
    for share in shares:
        n_points = int(rng.integers(6, 9))
        outline = random_blob(rng, n_points)
        stretch = math.exp(rng.uniform(-0.4, 0.4))
        outline = outline * np.array([stretch, 1.0 / stretch])
        outline *= math.sqrt(share * target * height * width / polygon_area(outline))
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        speed = float(rng.uniform(1.0, 4.0) * px_scale) if moving else 0.0
        shapes.append(_MovingShape(outline, centre, speed, float(rng.uniform(0, 2 * math.pi)), 0.15))
        described.append({"control_points": n_points, "speed_px_per_frame": round(speed, 3)})
    margin = (margin_fraction * width, margin_fraction * height)
    room = np.array([width / 2 - margin[0], height / 2 - margin[1]]) - 1.0
    if fit:
        for s in shapes:
            s.outline = fit_outline(s.outline, room)
    # corrections for overlap between shapes and rasterisation: one (today's), or up to 4 when fitting
    for _ in range(4 if fit else 1):
        first = rasterize([s.outline + np.clip(s.centre, *_centre_box(s, width, height, margin)) for s in shapes],
                          height, width)
        actual = max(float(first.mean()), 1e-6)
        if fit and abs(actual / target - 1.0) < 0.02:
            break
        factor = float(np.clip(math.sqrt(target / actual), *((0.5, 2.0) if fit else (0.8, 1.25))))
        for s in shapes:
            s.outline = fit_outline(s.outline * factor, room) if fit else s.outline * factor
    holes = _animate(shapes, num_frames, height, width, rng, margin=margin)
    info = {"mode": "random", "moving": moving, "target_fraction": round(float(target), 4),
            **({"margin_fraction": margin_fraction} if margin_fraction else {}),
            "shapes": described, "hole_fraction": _fraction_stats(holes)}
    return holes, info


def hard_masks(
    num_frames: int, height: int, width: int, rng: np.random.Generator,
    area_range: tuple[float, float] = (0.40, 0.50), margin_fraction: float = 0.06,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One large, central, compact hole that keeps ``margin_fraction`` of each side free (see module doc)."""
    target = rng.uniform(*area_range)
    n_points = int(rng.integers(6, 9))
    outline = random_blob(rng, n_points, radius_range=(0.82, 1.0), angle_jitter=0.2)
    outline = outline * np.array([width, height], dtype=np.float64)  # follow the frame's aspect
    outline *= math.sqrt(target * height * width / polygon_area(outline))
    margin = (margin_fraction * width, margin_fraction * height)
    extent = np.abs(outline).max(axis=0)
    room = np.array([width / 2 - margin[0], height / 2 - margin[1]]) - 1.0
    fit = float(min(1.0, *(room / extent)))
    outline *= fit  # never reach into the margin (area may drop slightly below the target)
    moving = bool(rng.random() < 0.5)
    speed = float(rng.uniform(0.15, 0.6) * min(height, width) / 512.0) if moving else 0.0
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.03, 0.03, 2) * np.array([width, height])
    shape = _MovingShape(outline, centre, speed, float(rng.uniform(0, 2 * math.pi)), 0.05)
    holes = _animate([shape], num_frames, height, width, rng, margin=margin)
    info = {"mode": "hard", "moving": moving, "target_fraction": round(float(target), 4),
            "margin_fraction": margin_fraction,
            "shapes": [{"control_points": n_points, "speed_px_per_frame": round(speed, 3)}],
            "hole_fraction": _fraction_stats(holes)}
    return holes, info


# --------------------------------------------------------------------------- object annotations


def read_annotation(path: str | Path) -> np.ndarray:
    """Object ids of an annotation PNG as ``uint8 [H, W]`` (palette index; 0 = background, 255 = void).

    RGB annotations are mapped to ids by their distinct colours (black = 0), in sorted colour order.
    """
    try:
        data = read_input_bytes(path, "annotation", max_bytes=MAX_IMAGE_BYTES)  # never blocks on a FIFO
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L", "1"):
                return np.array(img.convert("L") if mode == "1" else img, dtype=np.uint8)
            rgb = np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise FrameReadError(f"{path}: annotation not found") from None
    except FrameReadError:
        raise
    except Exception as exc:  # PIL raises several types for broken files
        raise FrameReadError(f"{path}: unreadable annotation ({exc})") from exc
    colours, ids = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    has_black = bool((colours == 0).all(axis=1).any())
    ids = ids.reshape(rgb.shape[:2]) + (0 if has_black else 1)
    return np.clip(ids, 0, 254).astype(np.uint8)


def pingpong_indices(available: int, num_frames: int, start: int = 0) -> list[int]:
    """``num_frames`` indices into ``available`` frames: consecutive from ``start`` if they fit, else
    back and forth (0, 1, .., n-1, n-2, .., 1, 0, 1, ..) so the object keeps moving smoothly."""
    if available <= 0:
        raise ValueError("no annotation frames")
    if available >= start + num_frames:
        return list(range(start, start + num_frames))
    cycle = list(range(available)) + list(range(available - 2, 0, -1)) if available > 1 else [0]
    return [cycle[k % len(cycle)] for k in range(num_frames)]


@dataclass(frozen=True)
class AnnotatedVideo:
    name: str
    files: tuple[Path, ...]


class AnnotationPool:
    """Object annotations of the input videos, the donors of ``--mask_mode object``."""

    def __init__(self, videos: Sequence[AnnotatedVideo]):
        self.videos = [v for v in videos if v.files]

    def __len__(self) -> int:
        return len(self.videos)

    def masks_for(
        self, target: str, num_frames: int, height: int, width: int, rng: np.random.Generator,
        min_fraction: float = 0.01, max_tries: int = 8,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A hole from one object of another video, resized to ``width x height``.

        Donor video, window and object are drawn from ``rng``; objects covering less than
        ``min_fraction`` of the frame on average are passed over.
        """
        donors = [v for v in self.videos if v.name != target]
        if not donors:
            raise ValueError("--mask_mode object: no other video with object annotations to take a mask from")
        rejected = []
        for _ in range(max_tries):
            donor = donors[int(rng.integers(len(donors)))]
            n = len(donor.files)
            start = int(rng.integers(0, n - num_frames + 1)) if n >= num_frames else 0
            idx = pingpong_indices(n, num_frames, start)
            cache: dict[int, np.ndarray] = {}
            for i in sorted(set(idx)):
                cache[i] = read_annotation(donor.files[i])
                first = next(iter(cache))
                if cache[i].shape != cache[first].shape:  # else np.stack fails without naming a file
                    raise FrameReadError(
                        f"{donor.files[i]}: annotation is {cache[i].shape[1]}x{cache[i].shape[0]}, "
                        f"{donor.files[first].name} of the same video is "
                        f"{cache[first].shape[1]}x{cache[first].shape[0]}")
            labels = np.stack([cache[i] for i in idx])
            ids = [int(v) for v in np.unique(labels) if v not in (0, VOID_LABEL)]
            if not ids:
                rejected.append(f"{donor.name}: no object")
                continue
            obj = ids[int(rng.integers(len(ids)))]
            holes = resize_labels((labels == obj).astype(np.uint8), width, height).astype(bool)
            stats = _fraction_stats(holes)
            if stats["mean"] < min_fraction:
                rejected.append(f"{donor.name} object {obj}: {stats['mean']:.3%} of the frame")
                continue
            info = {"mode": "object", "donor_video": donor.name, "object_id": obj,
                    "donor_frames": [donor.files[i].stem for i in idx], "hole_fraction": stats}
            return holes, info
        raise ValueError("--mask_mode object: no usable object annotation found (" + "; ".join(rejected) + ")")


def dilate_holes(holes: np.ndarray, iterations: int) -> np.ndarray:
    """Grow ``bool [T, H, W]`` holes as DiffuEraser's ``mask_dilation_iter`` does:
    ``iterations`` passes of a 3x3 cross (a diamond of radius ``iterations``). 0 = unchanged."""
    if iterations <= 0:
        return holes
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    grown = [cv2.dilate(h.astype(np.uint8), cross, iterations=iterations) for h in holes]
    return np.stack(grown).astype(bool)


def make_masks(
    mode: str, num_frames: int, height: int, width: int, rng: np.random.Generator,
    pool: AnnotationPool | None = None, video_name: str = "", dilation: int = 0,
    area_range: tuple[float, float] | None = None, margin_fraction: float | None = None,
    measure_motion: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Dispatch on ``mode`` (one of ``MASK_MODES``), then grow by ``dilation`` (``dilate_holes``).

    ``area_range`` / ``margin_fraction`` (random and hard; ``None``: the mode's own) shape the hole;
    ``measure_motion`` adds ``motion_px_per_frame`` (``mask_motion``) to the info (``hole_fraction``,
    the measured area, is always there). The result is the mask that is stored, given to the backend
    and used for compositing.
    """
    holes, info = _make_masks(mode, num_frames, height, width, rng, pool, video_name, area_range, margin_fraction)
    if dilation > 0:
        holes = dilate_holes(holes, dilation)
        info = {**info, "dilation": dilation, "hole_fraction": _fraction_stats(holes)}
    if measure_motion:
        info = {**info, "motion_px_per_frame": mask_motion(holes)}
    return holes, info


def _make_masks(
    mode: str, num_frames: int, height: int, width: int, rng: np.random.Generator,
    pool: AnnotationPool | None, video_name: str,
    area_range: tuple[float, float] | None = None, margin_fraction: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    shape_args: dict[str, Any] = {}
    if area_range is not None:
        shape_args["area_range"] = tuple(area_range)
    if margin_fraction is not None:
        shape_args["margin_fraction"] = margin_fraction
    if mode == "random":  # a given area or margin is kept to: the shapes fit inside the margin
        return random_masks(num_frames, height, width, rng, **shape_args, fit=bool(shape_args))
    if mode == "hard":
        return hard_masks(num_frames, height, width, rng, **shape_args)
    if mode == "object":
        if pool is None:
            raise ValueError("--mask_mode object needs an annotation pool")
        return pool.masks_for(video_name, num_frames, height, width, rng)
    raise ValueError(f"unknown mask mode {mode!r}; known: {', '.join(MASK_MODES)}")
