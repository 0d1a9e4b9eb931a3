"""The classical CPU backend: real negatives with the intended defect, no GPU, no weights.

These are *classical approximations* of the defects of a video-inpainting model, useful for
trying the pipeline, for tests and for ablations; real training data wants ``--backend models``
(ProPainter + DiffuEraser). Every video's meta says so (``classical_approximation: true``).

Each negative shows its own defect and, by the audit's metrics (``regdpo.audit.metrics``), not the
others' (tests/test_classical_purity.py):

- ``blur``: the clip seen through a Gaussian low-pass inside the hole (sigma ``strength x short side x
  BLUR_SIGMA_FRACTION``): the GT's structure, moving with the scene, without its texture. Computed once
  per video; also the base the hallucination fades into at the hole's edge.
- ``hallucination``: plausible-looking but wrong content that holds still: real texture from a distant
  region of the first frame with a hole (one offset), colour-matched to the ring around that hole, the same
  in every frame, feathered into the blur fill inside the hole. Below strength 1 it fades in over
  ``(1 - strength)`` of the hole's depth more (foreign texture only in the hole's core).
- ``flicker``: the clip is cut into segments (``plan_segments``); in each, the hole holds the GT's
  low-pass with the segment's own brightness plus the fine texture of the segment's own distant region,
  so every segment is plausible and only the segments differ: the hole jumps at each boundary. Below
  strength 1 the brightness change and the borrowed share of the texture shrink with it.

- ``inpaint``: the best fill this backend has (only when asked): every hole pixel takes the
  colour it has in the nearest frame in time where it is visible (temporal propagation, as video
  inpainting models begin), the rest Telea inpainting at full resolution. With ``--inpaint_candidates N``
  candidate 0 is that fill and candidate ``k >= 1`` a seeded draw of it (``inpaint_draw``): the
  propagation skips frames nearer than a drawn lag and the hole gets a drawn smooth colour drift, as
  another seed of a sampler would give a different, equally plausible result.
- ``renoise``: the counterpart of the models backend's re-noised GT (only when asked): inside the hole
  the GT's low frequencies (Gaussian low-pass of sigma ``strength x short side x
  RENOISE_SIGMA_FRACTION``) plus the inpaint fill's high frequencies (the fill minus its own low-pass),
  as re-noising to a level destroys the GT's bands above a cut that falls as the level rises and the
  model restores them (``renoise_fill``). A frequency split, never a pixel blend of GT and fill; its
  error is the fill's error high-passed, so it grows with the strength at every frequency. Strength 1.0
  is the inpaint fill itself (pure noise: ``inpaint``).

All randomness comes from ``clip.seed``; outputs are deterministic. The pipeline composites
the returned frames onto the GT with the stored mask.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..format import NEG_TYPES, stream_name
from ..frames import composite
from ..seeding import derive_seed
from .base import BackendResult, Clip, NegativeBackend, candidate_count, plan_segments, requested_streams

CLASSICAL_NOTE = (
    "classical approximation (OpenCV / numpy, no model): useful for trying the pipeline, tests and "
    "ablations; real training data wants --backend models"
)


class ClassicalBackend(NegativeBackend):
    """CPU negatives; see the module doc for what each type is."""

    name = "classical"
    supported_types = NEG_TYPES
    supports_candidates = True

    def __init__(
        self,
        flicker_segments: int = 3,
        inpaint_radius: int = 3,
        feather_fraction: float = 0.04,
        offset_candidates: int = 192,
    ):
        if flicker_segments < 1:
            raise ValueError(f"flicker_segments must be >= 1, got {flicker_segments}")
        self.flicker_segments = int(flicker_segments)
        self.inpaint_radius = int(inpaint_radius)
        self.feather_fraction = float(feather_fraction)
        self.offset_candidates = int(offset_candidates)

    def settings(self) -> dict[str, Any]:
        return {
            "flicker_segments": self.flicker_segments,
            "blur_sigma_fraction": BLUR_SIGMA_FRACTION,
            "inpaint": f"cv2.INPAINT_TELEA radius {self.inpaint_radius}",
            "feather_fraction": self.feather_fraction,
            "classical_approximation": True,
            "note": CLASSICAL_NOTE,
        }

    # ------------------------------------------------------------------ API
    def generate(self, clip: Clip, neg_types: Sequence[str],
                 strengths: Mapping[str, Sequence[float]] | None = None, *,
                 candidates: Mapping[str, int] | None = None) -> BackendResult:
        requests = requested_streams(neg_types, strengths)
        types = [t for t in NEG_TYPES if any(r[0] == t for r in requests)]
        result = BackendResult()
        frames, hole = clip.frames, clip.hole
        short = min(frames.shape[1:3])
        t0 = time.perf_counter()
        # shared per-video result: the blur negative and the base the hallucination fades into
        smooth = composite(hole_lowpass(frames, blur_sigma(short, 1.0)), frames, hole)
        result.timings["smooth_fill"] = time.perf_counter() - t0
        feather = max(2.0, self.feather_fraction * short)
        offsets: list[tuple[int, int]] = []
        if "hallucination" in types or "flicker" in types:
            t0 = time.perf_counter()
            need = 1 + (self.flicker_segments if "flicker" in types else 0)
            rng = np.random.default_rng(derive_seed(clip.seed, "offsets"))
            offsets = choose_offsets(hole, rng, need, self.offset_candidates)
            result.timings["offsets"] = time.perf_counter() - t0
        common = {"classical_approximation": True}
        texture: tuple[np.ndarray, dict[str, Any]] | None = None
        for neg_type, strength, stream in requests:
            t0 = time.perf_counter()
            if neg_type == "blur":
                sigma = blur_sigma(short, strength)
                result.negatives[stream] = smooth if strength >= 1.0 else composite(hole_lowpass(frames, sigma), frames, hole)
                result.info[stream] = {
                    **common,
                    "method": "the clip seen through a Gaussian low-pass inside the hole (sigma grows with the "
                    "strength): its structure kept and moving with the scene, its texture lost",
                    "sigma_px": round(sigma, 3),
                }
            elif neg_type == "hallucination":
                if texture is None:
                    texture = still_texture(frames, hole, offsets[0])
                fill, match = texture
                depth = hallucination_feather(hole, feather, strength)
                result.negatives[stream] = composite(feather_into(fill, smooth, hole, depth), frames, hole)
                result.info[stream] = {
                    **common,
                    "method": "texture of a distant region of the first frame with a hole (fixed offset), "
                    "colour-matched, held still over the clip, feathered into the blur fill",
                    "offset_yx": list(offsets[0]),
                    "colour_match": match,
                    "feather_px": round(depth, 2),
                }
            elif neg_type == "flicker":
                rng = np.random.default_rng(derive_seed(clip.seed, "flicker"))
                out, segments = flicker_fill(frames, hole, offsets[1:], self.flicker_segments, short, rng,
                                             strength)
                result.negatives[stream] = out
                result.info[stream] = {
                    **common,
                    "method": "per segment: the clip's structure (low-pass) with its own brightness and the fine "
                    "texture of its own distant region",
                    "segments": segments,
                    "num_segments": len(segments),
                }
            if neg_type in ("hallucination", "flicker") or stream != neg_type:
                result.timings[stream] = time.perf_counter() - t0
        fill = None
        if "inpaint" in types or "renoise" in types:
            t0 = time.perf_counter()
            fill = propagate_fill(frames, hole, self.inpaint_radius)
            result.timings["inpaint"] = time.perf_counter() - t0
        if "inpaint" in types:
            result.negatives["inpaint"] = fill
            result.info["inpaint"] = {
                **common,
                "method": "temporal propagation (nearest frame where the pixel is visible), then Telea "
                "inpainting at full resolution",
            }
            for k in range(1, candidate_count(candidates, "inpaint")):
                t0 = time.perf_counter()
                stream = stream_name("inpaint", 1.0, k)
                seed = derive_seed(clip.seed, "inpaint", k)
                result.negatives[stream], draw = inpaint_draw(frames, hole, seed, self.inpaint_radius)
                result.timings[stream] = time.perf_counter() - t0
                result.info[stream] = {
                    **common,
                    "method": "a seeded draw of the inpaint fill: temporal propagation from frames at least "
                    "`lag` frames away, Telea for the rest, a smooth colour drift in the hole",
                    "seed": seed, **draw,
                }
        for neg_type, strength, stream in requests:
            if neg_type != "renoise":
                continue
            t0 = time.perf_counter()
            sigma = renoise_sigma(short, strength)
            result.negatives[stream] = fill if strength >= 1.0 else renoise_fill(frames, fill, sigma)
            result.timings[stream] = time.perf_counter() - t0
            result.info[stream] = {
                **common,
                "method": "inside the hole: the GT's low frequencies (Gaussian low-pass, sigma grows with the "
                "strength) plus the inpaint fill's high frequencies; strength 1.0 is the inpaint fill",
                **({"sigma_px": round(sigma, 3)} if strength < 1.0 else {"same_as": "inpaint"}),
            }
        return result


# ---------------------------------------------------------------------- pure helpers


BLUR_SIGMA_FRACTION = 1 / 40
"""Classical blur: Gaussian sigma = strength x this x the frame's short side (6.4 px at 256 px). Small enough
that the audit's low-pass (short side / 48) still sees the GT's structure (no hallucination), large enough
to remove the texture (sharpness loss far beyond the audit's 'clear' line)."""


def blur_sigma(short: int, strength: float) -> float:
    """Gaussian sigma (px) of the classical blur at ``strength`` (0 at strength 0)."""
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
    return _borrow_then_telea(frames, hole, lambda t, s: (abs(s - t), s), radius)


def _borrow_then_telea(frames: np.ndarray, hole: np.ndarray, preference, radius: int) -> np.ndarray:
    """Per frame ``t``, each hole pixel takes its colour from the first other frame ``s`` (in the order of
    ``preference(t, s)``, smallest first) where it is not in the hole; the pixels no frame shows get Telea
    inpainting. Returns uint8 ``[T, H, W, 3]``, equal to ``frames`` outside the hole."""
    num = hole.shape[0]
    out = frames.copy()
    for t in range(num):
        remaining = hole[t].copy()
        if not remaining.any():
            continue
        for s in sorted(range(num), key=lambda s: preference(t, s)):
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


RENOISE_SIGMA_FRACTION = 1 / 16
"""Classical renoise: the GT is kept below the frequency of a Gaussian low-pass of sigma = strength x this x
the short side (8 px at 128 px and strength 1); the fill supplies everything above."""


def renoise_sigma(short: int, strength: float) -> float:
    """Gaussian sigma (px) splitting GT (below) from fill (above) in the classical renoise at ``strength``."""
    return float(strength) * RENOISE_SIGMA_FRACTION * short


def renoise_fill(frames: np.ndarray, fill: np.ndarray, sigma: float) -> np.ndarray:
    """``lowpass(GT) + fill - lowpass(fill)`` (uint8, rounded and clipped), the low-pass a Gaussian of
    ``sigma`` px: the GT's bands below the cut, the fill's above (the pipeline keeps the hole only).
    ``sigma`` 0 returns the GT; the error ``highpass(fill - GT)`` grows with ``sigma`` at every frequency."""
    if sigma <= 0:
        return frames.copy()
    gt, fl = frames.astype(np.float32), fill.astype(np.float32)
    out = _gaussian(gt, sigma) + fl - _gaussian(fl, sigma)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


INPAINT_DRAW_MAX_DRIFT = 24.0
"""Classical inpaint candidates: the largest RMS colour drift (grey levels, per channel) a draw adds in the hole."""


def inpaint_draw(frames: np.ndarray, hole: np.ndarray, seed: int, radius: int = 3) -> tuple[np.ndarray, dict[str, Any]]:
    """One seeded draw of the classical inpaint fill (a candidate ``k >= 1``): each hole pixel takes its
    colour from the nearest frame at least ``lag`` frames away where it is visible (any nearer one if none),
    Telea for the rest, plus a smooth colour drift (a low-passed random field of RMS up to
    ``INPAINT_DRAW_MAX_DRIFT`` grey levels) inside the hole. Returns (uint8 ``[T, H, W, 3]``, the draw)."""
    rng = np.random.default_rng(seed)
    num, height, width = hole.shape
    lag = int(rng.integers(1, max(2, num // 2 + 1)))
    amplitude = float(rng.uniform(0.1, 1.0)) * INPAINT_DRAW_MAX_DRIFT
    out = _borrow_then_telea(frames, hole, lambda t, s: (abs(s - t) < lag, abs(s - t), s), radius)
    field = rng.standard_normal((height, width, 3)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=max(1.0, min(height, width) / 8), borderType=cv2.BORDER_REFLECT)
    field *= amplitude / (float(np.sqrt(np.mean(np.square(field)))) + 1e-6)  # RMS = amplitude
    drifted = np.clip(np.round(out.astype(np.float32) + field[None]), 0, 255).astype(np.uint8)
    np.copyto(out, drifted, where=hole[..., None])
    return out, {"lag": lag, "drift_grey_levels": round(amplitude, 3)}


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


def _masked_stats(image: np.ndarray, mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    count = int(cv2.countNonZero(mask))
    if count == 0:
        return 0, np.zeros(3), np.zeros(3)
    mean, std = cv2.meanStdDev(image, mask=mask)
    return count, mean.ravel(), std.ravel()


def colour_match(donor: np.ndarray, frame: np.ndarray, hole2d: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """``donor`` (uint8 ``[H, W, 3]``) with one per-channel affine colour transform taking the mean and
    (clamped) std of its hole pixels to those of a ring just outside the hole in ``frame``."""
    if not hole2d.any():
        return donor, {"gain": [1.0] * 3, "shift": [0.0] * 3}
    k = max(3, int(min(hole2d.shape) * 0.03) | 1)
    ring = (cv2.dilate(hole2d.astype(np.uint8), np.ones((k, k), np.uint8)) > 0) & ~hole2d
    _, mu_d, sd_d = _masked_stats(donor, hole2d.astype(np.uint8))
    if ring.any():
        _, mu_r, sd_r = _masked_stats(frame, ring.astype(np.uint8))
    else:  # the hole covers the whole frame: nothing to match
        mu_r, sd_r = mu_d, sd_d
    gain = np.clip((sd_r + 1e-3) / (sd_d + 1e-3), 0.6, 1.6)
    shift = mu_r - gain * mu_d
    matched = cv2.LUT(donor, _colour_lut(gain, shift))
    return matched, {"gain": [round(float(g), 4) for g in gain], "shift": [round(float(x), 3) for x in shift]}


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


FLICKER_SPLIT_FRACTION = 1 / 64
"""Flicker: Gaussian sigma (fraction of the short side) splitting structure (kept) from fine texture (swapped)."""

FLICKER_TEXTURE_FLOOR = 16.0
"""Flicker: RMS (grey levels) a segment's borrowed fine texture is raised to when the donor region is flatter."""


def _gaussian(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for f in frames])


def flicker_fill(
    frames: np.ndarray,
    hole: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    num_segments: int,
    short: int,
    rng: np.random.Generator,
    strength: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fill each segment plausibly but differently (see module doc). Returns (frames, segment records).

    Inside the hole, segment ``k`` = the clip's low-pass (sigma ``FLICKER_SPLIT_FRACTION`` x ``short``)
    times its brightness + the fine texture (the rest) of the clip at ``offsets[k]`` (mirrored at the
    border), raised to ``FLICKER_TEXTURE_FLOOR`` RMS when flatter. The structure is the GT's in every
    segment, so only the segments differ. ``strength`` scales each segment's departure from the GT: its
    brightness change and the share of borrowed texture (the rest the GT's own; 0: the GT)."""
    num = hole.shape[0]
    height, width = hole.shape[1:]
    bounds = plan_segments(num, min(num_segments, num))
    sigma = max(0.5, FLICKER_SPLIT_FRACTION * short)
    clip = frames.astype(np.float32)
    low = _gaussian(clip, sigma)
    own = clip - low
    out = frames.copy()
    records = []
    sign = 1.0 if rng.random() < 0.5 else -1.0
    ys, xs = np.arange(height), np.arange(width)
    for k, (start, stop) in enumerate(bounds):
        sel = hole[start:stop]
        offset = tuple(offsets[k % len(offsets)]) if offsets else (0, 0)
        brightness = 1.0 + sign * float(rng.uniform(0.05, 0.07)) * strength
        sign = -sign  # neighbouring segments move brightness in opposite directions
        donor = clip[start:stop][:, reflect_index(ys - offset[0], height)][:, :, reflect_index(xs - offset[1], width)]
        detail = donor - _gaussian(donor, sigma)
        rms = float(np.sqrt(np.mean(np.square(detail[sel], dtype=np.float64)))) if sel.any() else 0.0
        detail *= max(1.0, FLICKER_TEXTURE_FLOOR / (rms + 1e-6))
        texture = strength * detail + (1.0 - strength) * own[start:stop]
        seg = np.clip(np.round(low[start:stop] * brightness + texture), 0, 255).astype(np.uint8)
        np.copyto(out[start:stop], seg, where=sel[..., None])
        records.append({"start": start, "stop": stop, "offset_yx": list(offset), "brightness": round(brightness, 4)})
    return out, records


def still_texture(frames: np.ndarray, hole: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    """Foreign texture that holds still: the first frame with a hole seen at ``offset`` (mirrored at the
    border), colour-matched to the ring around its hole (``colour_match``), the same in every frame, so the
    hole shows wrong but steady content (no change from frame to frame inside the hole). Returns (uint8
    ``[T, H, W, 3]``, the whole frame: the caller keeps the hole; the colour transform)."""
    num, height, width = frames.shape[:3]
    first = next((t for t in range(num) if hole[t].any()), 0)
    ys, xs = reflect_index(np.arange(height) - offset[0], height), reflect_index(np.arange(width) - offset[1], width)
    canvas, match = colour_match(np.ascontiguousarray(frames[first][ys][:, xs]), frames[first], hole[first])
    return np.broadcast_to(canvas, frames.shape).copy(), match
