"""Where a training item is cut from its clip so that it holds the hole (pure functions, no I/O).

A random square crop of a wide frame can miss the hole entirely: the pair is then identical
everywhere and the step trains nothing. ``DPODataset`` therefore measures, for every crop
position, how many of the window's hole pixels (summed over its frames) the crop holds, and
draws among the positions holding at least ``min_share`` of them (``args.min_hole_coverage``),
or, when none does (a hole larger than the crop), among the best-covering positions. A window
with no hole at all is replaced by one that has some (``choose_window_start``), so no item is
hole-free unless its whole stored clip is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["crop_coverage", "choose_crop", "choose_window_start", "DEFAULT_MIN_HOLE_COVERAGE"]

DEFAULT_MIN_HOLE_COVERAGE = 0.5
"""Share of the window's hole pixels a crop must hold (``args.min_hole_coverage``)."""


def crop_coverage(hole_count: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """Hole pixels inside every ``crop_hw`` crop of a ``[H, W]`` per-pixel hole count.

    ``out[y, x]`` = ``hole_count[y:y+ch, x:x+cw].sum()``; shape ``[H-ch+1, W-cw+1]``, int64.
    """
    height, width = hole_count.shape
    ch, cw = crop_hw
    if not (0 < ch <= height and 0 < cw <= width):
        raise ValueError(f"crop {cw}x{ch} does not fit in {width}x{height}")
    table = np.zeros((height + 1, width + 1), np.int64)
    np.cumsum(np.cumsum(hole_count, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    return table[ch:, cw:] - table[:-ch, cw:] - table[ch:, :-cw] + table[:-ch, :-cw]


def choose_crop(
    coverage: np.ndarray,
    total: int,
    min_share: float,
    draw: tuple[float, float],
    center: bool = False,
) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the crop, from ``coverage`` (``crop_coverage``) and ``total`` hole pixels.

    Candidates: positions with ``coverage >= min_share * total``; if none, those with the largest
    coverage. ``center``: the candidate nearest the centre position (first in row-major order on
    ties). Otherwise one candidate drawn with the uniforms ``draw = (u_y, u_x)`` in ``[0, 1)``:
    when every position is a candidate (no hole, ``min_share = 0``, or a hole every crop holds)
    ``y = floor(u_y * ny)``, ``x = floor(u_x * nx)``, the plain uniform crop; else the
    ``floor(u_y * n)``-th of the ``n`` candidates in row-major order.
    """
    ny, nx = coverage.shape
    candidates = coverage >= min_share * total
    if not candidates.any():
        candidates = coverage == coverage.max()
    if center:
        ys, xs = np.nonzero(candidates)
        distance = (ys - (ny - 1) / 2) ** 2 + (xs - (nx - 1) / 2) ** 2
        best = int(np.argmin(distance))
        return int(ys[best]), int(xs[best])
    u_y, u_x = draw
    if candidates.all():
        return min(int(u_y * ny), ny - 1), min(int(u_x * nx), nx - 1)
    flat = np.flatnonzero(candidates)
    chosen = int(flat[min(int(u_y * flat.size), flat.size - 1)])
    return chosen // nx, chosen % nx


def choose_window_start(frame_has_hole: Sequence[bool], nframes: int, draw: float) -> int:
    """Start of an ``nframes`` window holding at least one hole frame, drawn with ``draw`` in ``[0, 1)``.

    Among the starts whose window holds a hole frame (every start if no frame has a hole).
    """
    has = np.asarray(frame_has_hole, bool)
    starts = np.arange(len(has) - nframes + 1)
    if starts.size < 1:
        raise ValueError(f"clip has {len(has)} frames, fewer than nframes={nframes}")
    window_holes = np.convolve(has.astype(np.int64), np.ones(nframes, np.int64), mode="valid")
    valid = starts[window_holes > 0] if has.any() else starts
    return int(valid[min(int(draw * valid.size), valid.size - 1)])
