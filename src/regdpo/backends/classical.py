"""The classical CPU backend: real negatives with the intended defect, no GPU, no weights.

These are *classical approximations* of the defects of a video-inpainting model, useful for
trying the pipeline, for tests and for ablations; real training data wants ``--backend models``
(ProPainter + DiffuEraser). Every video's meta says so (``classical_approximation: true``).

- ``blur``: a smooth fill of the hole without high-frequency texture: OpenCV Telea inpainting
  at a reduced size (short side ``smooth_short_side``), upsampled. Computed once per video and
  shared: it is also the base that the other two fills fade into at the hole's edge. Below
  strength 1 (``--blur_strength``) the hole holds the clip seen through a Gaussian low-pass of
  sigma ``strength x short side / 16``: the structure kept, the texture lost in proportion.
- strengths (``--hallucination_strength``, ``--flicker_strength``): hallucination fades its foreign
  texture in over ``(1 - strength)`` of the hole's depth more (weaker = foreign texture only in the
  hole's core, the smooth fill around it); flicker multiplies each segment's departure from the
  shared smooth fill (its donor share and brightness change) by the strength.
- ``hallucination``: plausible-looking but wrong content: real texture from a distant region of
  the same clip (one offset for the whole clip, so it moves coherently with the scene),
  colour-matched to the ring around the hole and feathered into the smooth fill over a few
  pixels inside the hole.
- ``flicker``: the clip is cut into segments (``plan_segments``) and each segment is filled
  differently (its own donor offset, mix with the smooth fill and brightness), so the hole
  content changes abruptly at each segment boundary while staying steady inside a segment.

- ``inpaint``: the best fill this backend has (only when asked): every hole pixel takes the
  colour it has in the nearest frame in time where it is visible (temporal propagation, as video
  inpainting models begin), the rest Telea inpainting at full resolution.

All randomness comes from ``clip.seed``; outputs are deterministic. The pipeline composites
the returned frames onto the GT with the stored mask.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..format import NEG_TYPES, check_neg_type
from ..seeding import derive_seed
from .base import BackendResult, Clip, NegativeBackend, plan_segments, requested_streams

CLASSICAL_NOTE = (
    "classical approximation (OpenCV / numpy, no model): useful for trying the pipeline, tests and "
    "ablations; real training data wants --backend models"
)


class ClassicalBackend(NegativeBackend):
    """CPU negatives; see the module doc for what each type is."""

    name = "classical"
    supported_types = NEG_TYPES

    def __init__(
        self,
        flicker_segments: int = 3,
        smooth_short_side: int = 128,
        inpaint_radius: int = 3,
        feather_fraction: float = 0.012,
        offset_candidates: int = 192,
    ):
        if flicker_segments < 1:
            raise ValueError(f"flicker_segments must be >= 1, got {flicker_segments}")
        self.flicker_segments = int(flicker_segments)
        self.smooth_short_side = int(smooth_short_side)
        self.inpaint_radius = int(inpaint_radius)
        self.feather_fraction = float(feather_fraction)
        self.offset_candidates = int(offset_candidates)

    def settings(self) -> dict[str, Any]:
        return {
            "flicker_segments": self.flicker_segments,
            "smooth_short_side": self.smooth_short_side,
            "inpaint": f"cv2.INPAINT_TELEA radius {self.inpaint_radius}",
            "feather_fraction": self.feather_fraction,
            "classical_approximation": True,
            "note": CLASSICAL_NOTE,
        }

    # ------------------------------------------------------------------ API
    def generate(self, clip: Clip, neg_types: Sequence[str],
                 strengths: Mapping[str, Sequence[float]] | None = None) -> BackendResult:
        requests = requested_streams(neg_types, strengths)
        types = [t for t in NEG_TYPES if any(r[0] == t for r in requests)]
        result = BackendResult()
        frames, hole = clip.frames, clip.hole
        t0 = time.perf_counter()
        # shared per-video result: the blur negative and the base of the other two fills
        smooth = smooth_fill(frames, hole, self.smooth_short_side, self.inpaint_radius)
        result.timings["smooth_fill"] = time.perf_counter() - t0
        short = min(frames.shape[1:3])
        feather = max(2.0, self.feather_fraction * short)
        offsets: list[tuple[int, int]] = []
        if "hallucination" in types or "flicker" in types:
            t0 = time.perf_counter()
            need = 1 + (self.flicker_segments if "flicker" in types else 0)
            rng = np.random.default_rng(derive_seed(clip.seed, "offsets"))
            offsets = choose_offsets(hole, rng, need, self.offset_candidates)
            result.timings["offsets"] = time.perf_counter() - t0
        common = {"classical_approximation": True}
        donor: tuple[np.ndarray, dict[str, Any]] | None = None
        for neg_type, strength, stream in requests:
            t0 = time.perf_counter()
            if neg_type == "blur" and strength >= 1.0:
                result.negatives[stream] = smooth
                result.info[stream] = {
                    **common,
                    "method": "smooth fill: OpenCV Telea inpainting at reduced size, upsampled (no texture)",
                    "smooth_short_side": self.smooth_short_side,
                }
            elif neg_type == "blur":
                sigma = blur_sigma(short, strength)
                result.negatives[stream] = hole_lowpass(frames, sigma)
                result.info[stream] = {
                    **common,
                    "method": "the clip seen through a Gaussian low-pass inside the hole (sigma grows with the "
                    "strength): its structure kept, its texture lost",
                    "sigma_px": round(sigma, 3),
                }
            elif neg_type == "hallucination":
                if donor is None:
                    donor = donor_fill(frames, hole, offsets[0])
                fill, match = donor
                depth = hallucination_feather(hole, feather, strength)
                result.negatives[stream] = feather_into(fill, smooth, hole, depth)
                result.info[stream] = {
                    **common,
                    "method": "texture from a distant region of the clip (fixed offset), colour-matched, "
                    "feathered into the smooth fill",
                    "offset_yx": list(offsets[0]),
                    "colour_match": match,
                    "feather_px": round(depth, 2),
                }
            elif neg_type == "flicker":
                rng = np.random.default_rng(derive_seed(clip.seed, "flicker"))
                out, segments = flicker_fill(frames, hole, smooth, offsets[1:], self.flicker_segments, feather, rng,
                                             strength)
                result.negatives[stream] = out
                result.info[stream] = {
                    **common,
                    "method": "each segment filled differently (donor offset, mix with smooth fill, brightness)",
                    "segments": segments,
                    "num_segments": len(segments),
                }
            if neg_type in ("hallucination", "flicker") or stream != neg_type:
                result.timings[stream] = time.perf_counter() - t0
        if "inpaint" in types:
            t0 = time.perf_counter()
            result.negatives["inpaint"] = propagate_fill(frames, hole, self.inpaint_radius)
            result.timings["inpaint"] = time.perf_counter() - t0
            result.info["inpaint"] = {
                **common,
                "method": "temporal propagation (nearest frame where the pixel is visible), then Telea "
                "inpainting at full resolution",
            }
        return result


# ---------------------------------------------------------------------- pure helpers


BLUR_SIGMA_FRACTION = 1 / 16
"""Classical blur below strength 1: Gaussian sigma = strength x this x the frame's short side."""


def blur_sigma(short: int, strength: float) -> float:
    """Gaussian sigma (px) of the classical blur at ``strength`` < 1 (0 at strength 0)."""
    return float(strength) * BLUR_SIGMA_FRACTION * short


def hole_lowpass(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Frames low-passed by a Gaussian of ``sigma`` px (the pipeline keeps it inside the hole only).
    ``sigma`` 0 returns the frames unchanged."""
    if sigma <= 0:
        return frames.copy()
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for f in frames])


def hallucination_feather(hole: np.ndarray, feather_px: float, strength: float) -> float:
    """Depth (px) over which the foreign texture fades in from the smooth fill at the hole's edge:
    ``feather_px`` at strength 1 (texture fills the hole), growing by ``(1 - strength)`` times the
    hole's largest inner distance, so a weaker hallucination keeps the foreign texture to the hole's core."""
    if strength >= 1.0:
        return feather_px
    union = hole.any(axis=0)
    if not union.any():
        return feather_px
    depth = float(cv2.distanceTransform(np.pad(union.astype(np.uint8), 1), cv2.DIST_L2, 3).max())
    return feather_px + (1.0 - strength) * depth


def propagate_fill(frames: np.ndarray, hole: np.ndarray, radius: int = 3) -> np.ndarray:
    """Per frame, each hole pixel takes its colour from the nearest frame in time where it is not in
    the hole (earlier frame first on ties); pixels in the hole of every frame get Telea inpainting at
    full resolution. Returns uint8 ``[T, H, W, 3]``, equal to ``frames`` outside the hole."""
    num = hole.shape[0]
    out = frames.copy()
    for t in range(num):
        remaining = hole[t].copy()
        if not remaining.any():
            continue
        for s in sorted(range(num), key=lambda s: (abs(s - t), s)):
            if s == t:
                continue
            take = remaining & ~hole[s]
            if take.any():
                out[t][take] = frames[s][take]
                remaining &= ~take
                if not remaining.any():
                    break
        if remaining.any():
            filled = cv2.inpaint(out[t], remaining.astype(np.uint8), radius, cv2.INPAINT_TELEA)
            out[t][remaining] = filled[remaining]
    return out


def smooth_fill(frames: np.ndarray, hole: np.ndarray, short_side: int = 128, radius: int = 3) -> np.ndarray:
    """Per frame, fill the hole by Telea inpainting at a reduced size and upsample it.

    ``frames`` uint8 ``[T, H, W, 3]``, ``hole`` bool ``[T, H, W]``. Pixels partly covered by the
    hole at the reduced size count as hole, so no GT from inside the hole leaks into the fill.
    Returns uint8 ``[T, H, W, 3]``, equal to ``frames`` outside the hole.
    """
    num, height, width = hole.shape
    factor = max(1.0, min(height, width) / float(short_side))
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    out = frames.copy()
    for t in range(num):
        if not hole[t].any():
            continue
        if factor > 1.0:
            frame = cv2.resize(frames[t], small, interpolation=cv2.INTER_AREA)
            mask = (cv2.resize(hole[t].astype(np.uint8) * 255, small, interpolation=cv2.INTER_AREA) > 0)
        else:
            frame, mask = frames[t], hole[t]
        filled = cv2.inpaint(frame, mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        if factor > 1.0:
            filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
        out[t][hole[t]] = filled[hole[t]]
    return out


def _bbox(mask2d: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask2d)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def choose_offsets(
    hole: np.ndarray, rng: np.random.Generator, count: int, candidates: int = 192
) -> list[tuple[int, int]]:
    """``count`` distinct offsets ``(dy, dx)`` for donor regions far from the hole.

    The donor of hole pixel ``(y, x)`` is ``(y - dy, x - dx)`` (mirrored at the border). Offsets
    are ranked by the share of hole pixels (union over time) whose donor lies in the hole too, then
    by whether the donor region crosses the frame border; ties keep the random draw order. Chosen
    offsets are at least 1/8 of the short side apart so flicker segments differ.
    """
    num, height, width = hole.shape
    union = hole.any(axis=0)
    if not union.any():
        return [(height // 2, width // 2)] * count
    factor = max(1, min(height, width) // 64)
    small = union[::factor, ::factor]
    sys_, sxs = np.nonzero(small)
    if not len(sys_):
        small, factor = union, 1
        sys_, sxs = np.nonzero(small)
    sh, sw = small.shape
    y0, y1, x0, x1 = _bbox(union)
    scored = []
    for k in range(candidates):
        dy = int(rng.integers(-(height - 1), height))
        dx = int(rng.integers(-(width - 1), width))
        donor_in_hole = small[reflect_index(sys_ - dy // factor, sh), reflect_index(sxs - dx // factor, sw)]
        overlap = float(donor_in_hole.mean())
        crosses = not (y0 - dy >= 0 and y1 - dy <= height and x0 - dx >= 0 and x1 - dx <= width)
        scored.append((round(overlap, 2), crosses, k, (dy, dx)))
    scored.sort()
    min_gap = max(1.0, min(height, width) / 8.0)
    chosen: list[tuple[int, int]] = []
    for *_, off in scored:
        if all(math.hypot(off[0] - c[0], off[1] - c[1]) >= min_gap for c in chosen):
            chosen.append(off)
            if len(chosen) == count:
                break
    while len(chosen) < count:  # tiny frames: reuse in order
        chosen.append(scored[len(chosen) % len(scored)][3])
    return chosen


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map any integer index into ``[0, size)`` by mirroring at the borders (..2 1 0 1 2 .. n-2 n-1 n-2 ..),
    so a donor region that crosses the frame edge continues as a mirror image, without a seam."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    m = np.mod(index, period)
    return np.where(m < size, m, period - m)


def _colour_lut(gain: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Lookup table ``[256, 1, 3]`` (cv2.LUT layout) for ``clip(round(v * gain + shift), 0, 255)`` per channel."""
    v = np.arange(256, dtype=np.float64)[:, None]
    return np.clip(np.round(v * gain[None, :] + shift[None, :]), 0, 255).astype(np.uint8)[:, None, :]


def _pooled_stats(stats: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel of the union of pixel sets given as (count, mean, std)."""
    n = np.array([s[0] for s in stats], dtype=np.float64)
    means = np.stack([s[1] for s in stats])
    second = np.stack([s[2] ** 2 + s[1] ** 2 for s in stats])
    total = max(n.sum(), 1.0)
    mu = (n[:, None] * means).sum(0) / total
    var = np.maximum((n[:, None] * second).sum(0) / total - mu**2, 0.0)
    return mu, np.sqrt(var)


def _masked_stats(image: np.ndarray, mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    count = int(cv2.countNonZero(mask))
    if count == 0:
        return 0, np.zeros(3), np.zeros(3)
    mean, std = cv2.meanStdDev(image, mask=mask)
    return count, mean.ravel(), std.ravel()


def donor_fill(
    frames: np.ndarray, hole: np.ndarray, offset: tuple[int, int], frame_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames whose hole holds the content at ``offset``, colour-matched to the ring around the hole.

    The hole pixel ``(y, x)`` takes the colour at ``(y - dy, x - dx)`` (mirrored at the border).
    One per-channel affine colour transform (mean and, clamped, std of the donor pixels -> those of
    a ring just outside the hole) serves the whole range, so the fill stays temporally coherent.
    Returns (uint8 ``[T', H, W, 3]`` for ``frame_range``, equal to ``frames`` outside the hole;
    transform parameters).
    """
    start, stop = frame_range or (0, hole.shape[0])
    frames_r, hole_r = frames[start:stop], hole[start:stop]
    out = frames_r.copy()
    union = hole_r.any(axis=0)
    if not union.any():
        return out, {"gain": [1.0] * 3, "shift": [0.0] * 3}
    height, width = hole.shape[1:]
    y0, y1, x0, x1 = _bbox(union)
    map_x = np.broadcast_to(np.arange(x0, x1, dtype=np.float32)[None, :] - offset[1], (y1 - y0, x1 - x0))
    map_y = np.broadcast_to(np.arange(y0, y1, dtype=np.float32)[:, None] - offset[0], (y1 - y0, x1 - x0))
    map_x, map_y = np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)
    masks = [np.ascontiguousarray(h[y0:y1, x0:x1]).astype(np.uint8) for h in hole_r]  # 1 = hole
    donors = [cv2.remap(f, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101) for f in frames_r]
    short = min(height, width)
    k = max(3, int(short * 0.03) | 1)
    ring = (cv2.dilate(union.astype(np.uint8), np.ones((k, k), np.uint8)) > 0) & ~union
    ring_u8 = ring.astype(np.uint8)
    mu_d, sd_d = _pooled_stats([_masked_stats(d, m) for d, m in zip(donors, masks)])
    if ring.any():
        mu_r, sd_r = _pooled_stats([_masked_stats(f, ring_u8) for f in frames_r])
    else:  # the hole covers the whole frame: nothing to match
        mu_r, sd_r = mu_d, sd_d
    gain = np.clip((sd_r + 1e-3) / (sd_d + 1e-3), 0.6, 1.6)
    shift = mu_r - gain * mu_d
    lut = _colour_lut(gain, shift)
    for t, (donor, mask) in enumerate(zip(donors, masks)):
        np.copyto(out[t, y0:y1, x0:x1], cv2.LUT(donor, lut), where=mask.astype(bool)[..., None])
    return out, {"gain": [round(float(g), 4) for g in gain], "shift": [round(float(s), 3) for s in shift]}


def feather_into(fill: np.ndarray, base: np.ndarray, hole: np.ndarray, feather_px: float) -> np.ndarray:
    """Inside the hole, fade from ``base`` at the hole's edge to ``fill`` ``feather_px`` pixels in."""
    out = fill.copy()
    for t in range(hole.shape[0]):
        if not hole[t].any():
            continue
        y0, y1, x0, x1 = _bbox(hole[t])
        h = np.pad(hole[t, y0:y1, x0:x1].astype(np.uint8), 1)  # pad: the box edge is not the hole edge
        dist = cv2.distanceTransform(h, cv2.DIST_L2, 3)[1:-1, 1:-1]
        ys, xs = np.nonzero((dist > 0) & (dist < feather_px))
        if not len(ys):
            continue
        alpha = (dist[ys, xs] / feather_px)[:, None]
        ys, xs = ys + y0, xs + x0
        f = fill[t, ys, xs].astype(np.float32)
        b = base[t, ys, xs].astype(np.float32)
        out[t, ys, xs] = np.round(alpha * f + (1.0 - alpha) * b).astype(np.uint8)
    return out


def flicker_fill(
    frames: np.ndarray,
    hole: np.ndarray,
    smooth: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    num_segments: int,
    feather_px: float,
    rng: np.random.Generator,
    strength: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fill each segment of the clip differently (see module doc). Returns (frames, segment records).

    ``strength`` scales how far each segment departs from the shared smooth fill: its donor share
    (``mix``) and its brightness change are multiplied by it (0: every segment is the smooth fill)."""
    num = hole.shape[0]
    bounds = plan_segments(num, min(num_segments, num))
    out = frames.copy()
    records = []
    sign = 1.0 if rng.random() < 0.5 else -1.0
    for k, (start, stop) in enumerate(bounds):
        offset = tuple(offsets[k % len(offsets)]) if offsets else (0, 0)
        mix = float(rng.uniform(0.35, 1.0)) * strength
        brightness = 1.0 + sign * float(rng.uniform(0.06, 0.15)) * strength
        sign = -sign  # neighbouring segments move brightness in opposite directions
        fill, _ = donor_fill(frames, hole, offset, (start, stop))
        sel = hole[start:stop]
        seg = smooth[start:stop].copy()
        for t in range(stop - start):
            mixed = cv2.addWeighted(fill[t], mix * brightness, seg[t], (1.0 - mix) * brightness, 0.0)
            np.copyto(seg[t], mixed, where=sel[t][..., None])
        seg = feather_into(seg, smooth[start:stop], sel, feather_px)
        np.copyto(out[start:stop], seg, where=sel[..., None])
        records.append({"start": start, "stop": stop, "offset_yx": list(offset), "mix": round(mix, 4),
                        "brightness": round(brightness, 4)})
    return out, records
