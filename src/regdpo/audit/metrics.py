"""Measurements of one negative against its GT, inside the hole. Pure numpy / OpenCV (CPU).

Conventions: ``gt`` and ``neg`` are RGB ``uint8 [T, H, W, 3]``; ``hole`` is ``bool [T, H, W]``
(True = hole). Grey levels are 0..255. Every function is deterministic.

Measures (details and reasoning in ``docs/audit.md``):

- blur: ``sharpness_loss_db = 10 log10(E_gt / E_neg)`` with ``E`` the mean squared 3x3
  Laplacian over the (eroded) hole; > 0 means the negative lost high frequencies.
- hallucination: PSNR and mean CIE76 colour distance between Gaussian low-passed negative
  and GT over the hole; a low PSNR means the content departs from GT at low frequency.
- fidelity (for the quality score, ``quality.py``): scikit-image's PSNR over the hole pixels of
  the whole clip, and its SSIM map (Gaussian window, Wang et al. 2004) averaged over the hole.
- flicker: per transition t -> t+1, the instability ``e[t]`` of a clip in the region
  ``hole[t] | hole[t+1]`` is the smaller of its error after warping frame t with the
  GT's DIS optical flow and its plain frame difference (so content that moves with the
  scene, or stays still, is stable). ``excess[t] = (e_neg[t] - e_gt[t]) / (mean(e_gt) + floor)``
  and its peak is the flicker score; large excesses are the jumps, compared with the flicker
  segment boundaries recorded by the generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .. import pixel_metrics as pm
from .config import NOT_MEASURED, VERDICTS, AuditConfig

_MAX_PSNR = 100.0


# --------------------------------------------------------------------------- geometry


def hole_bbox(hole: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the union of the hole over all frames, grown by ``margin``; None if empty."""
    union = hole.any(axis=0)
    ys = np.flatnonzero(union.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    return (
        max(0, int(ys[0]) - margin),
        min(h, int(ys[-1]) + 1 + margin),
        max(0, int(xs[0]) - margin),
        min(w, int(xs[-1]) + 1 + margin),
    )


def lowpass_sigma(height: int, width: int, cfg: AuditConfig) -> float:
    return max(0.5, cfg.lowpass_sigma_frac * min(height, width))


def crop_margin(height: int, width: int, cfg: AuditConfig) -> int:
    """Context kept around the hole: enough for the low-pass support and for optical flow."""
    return int(math.ceil(3 * lowpass_sigma(height, width, cfg))) + 16


def _eroded(hole: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return hole
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    eroded = np.stack([cv2.erode(h.astype(np.uint8), kernel, borderValue=0) for h in hole]).astype(bool)
    return eroded if eroded.any() else hole


# --------------------------------------------------------------------------- invariants


def _channel_max_absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = cv2.absdiff(a, b)
    return np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])


def outside_hole_difference(gt: np.ndarray, neg: np.ndarray, hole: np.ndarray) -> dict[str, Any]:
    """Max abs difference and count of differing pixels outside the hole (both must be 0)."""
    max_diff, pixels, worst_frame, worst_count = 0, 0, -1, 0
    for t in range(gt.shape[0]):
        diff = _channel_max_absdiff(neg[t], gt[t])
        diff[hole[t]] = 0
        count = int(np.count_nonzero(diff))
        if count:
            pixels += count
            max_diff = max(max_diff, int(diff.max()))
            if count > worst_count:
                worst_frame, worst_count = t, count
    return {"max_abs_diff": max_diff, "pixels": pixels, "worst_frame": worst_frame}


def frames_identical_in_hole(gt: np.ndarray, neg: np.ndarray, hole: np.ndarray) -> list[int]:
    """Frames whose hole is non-empty and where the negative equals the GT on every hole pixel."""
    same = []
    for t in range(gt.shape[0]):
        if hole[t].any() and not np.count_nonzero(_channel_max_absdiff(neg[t], gt[t])[hole[t]]):
            same.append(t)
    return same


def mask_values_binary(raw_masks: np.ndarray) -> list[int]:
    """Grey values of stored masks other than 0 and 255 (empty list = binary)."""
    values = np.unique(raw_masks)
    return [int(v) for v in values if v not in (0, 255)]


# --------------------------------------------------------------------------- defect measures


@dataclass
class Reference:
    """What is computed once per video from the GT (cropped around the hole) and shared by negatives."""

    box: tuple[int, int, int, int]
    hole: np.ndarray  # bool [T, h, w] (cropped)
    gt: np.ndarray  # float32 [T, h, w, 3] (cropped)
    gt_grey_lap_energy: float
    blur_region: np.ndarray  # bool [T, h, w]
    gt_lowpass: np.ndarray  # float32 [T, h', w', 3] (at the low-pass resolution)
    lowpass_hole: np.ndarray  # bool [T, h', w']
    sigma: float
    warp_maps: list[tuple[np.ndarray, np.ndarray] | None]  # per transition; None if region empty
    gt_instability: np.ndarray  # float64 [T-1], NaN where region empty
    gt_change: np.ndarray  # float64 [T-1], plain frame difference of GT


def _lowpass_factor(sigma: float) -> int:
    """Area-downsampling factor applied before the Gaussian (same low-pass, far fewer pixels)."""
    return max(1, int(sigma // 2))


def _shrink(frame: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return frame
    h, w = frame.shape[:2]
    size = (max(1, -(-w // factor)), max(1, -(-h // factor)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _lowpass(clip: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of float32 frames, computed at 1/``_lowpass_factor`` resolution."""
    k = _lowpass_factor(sigma)
    return np.stack(
        [cv2.GaussianBlur(_shrink(f, k), (0, 0), sigmaX=sigma / k, borderType=cv2.BORDER_REFLECT) for f in clip]
    )


def _lowpass_hole(hole: np.ndarray, sigma: float) -> np.ndarray:
    """The hole at the low-pass resolution (pixels at least half inside; all touched ones if none is)."""
    k = _lowpass_factor(sigma)
    if k == 1:
        return hole
    cover = np.stack([_shrink(h.astype(np.float32), k) for h in hole])
    small = cover >= 0.5
    return small if small.any() else cover > 0


def _lap_energy(grey: np.ndarray, region: np.ndarray) -> float:
    total, count = 0.0, int(region.sum())
    if count == 0:
        return 0.0
    for f, r in zip(grey, region):
        lap = cv2.Laplacian(f, cv2.CV_32F, ksize=3)
        total += float(np.square(lap[r], dtype=np.float64).sum())
    return total / count


def reference(gt: np.ndarray, hole: np.ndarray, cfg: AuditConfig) -> Reference | None:
    """Per-video GT measurements; None when the hole is empty in every frame."""
    t, h, w = hole.shape
    box = hole_bbox(hole, crop_margin(h, w, cfg))
    if box is None:
        return None
    y0, y1, x0, x1 = box
    hole_c = np.ascontiguousarray(hole[:, y0:y1, x0:x1])
    gt_u8 = np.ascontiguousarray(gt[:, y0:y1, x0:x1])
    gt_f = gt_u8.astype(np.float32)
    grey = pm.grey(gt_u8)
    blur_region = _eroded(hole_c, cfg.erode_px)
    sigma = lowpass_sigma(h, w, cfg)

    grid_x, grid_y = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
    maps: list[tuple[np.ndarray, np.ndarray] | None] = []
    instability = np.full(max(t - 1, 0), np.nan)
    change = np.full(max(t - 1, 0), np.nan)
    for k in range(t - 1):
        region = hole_c[k] | hole_c[k + 1]
        if not region.any():
            maps.append(None)
            continue
        # flow of frame k+1 towards frame k: gt[k+1](p) ~ gt[k](p + flow(p))
        flow = pm.dis(cfg.flow_preset).calc(grey[k + 1], grey[k], None)
        m = (grid_x + flow[..., 0], grid_y + flow[..., 1])
        maps.append(m)
        instability[k], change[k] = pm.transition_error(gt_f[k], gt_f[k + 1], region, m)
    return Reference(
        box=box,
        hole=hole_c,
        gt=gt_f,
        gt_grey_lap_energy=_lap_energy(grey.astype(np.float32), blur_region),
        blur_region=blur_region,
        gt_lowpass=_lowpass(gt_f, sigma),
        lowpass_hole=_lowpass_hole(hole_c, sigma),
        sigma=sigma,
        warp_maps=maps,
        gt_instability=instability,
        gt_change=change,
    )


def blur_metrics(ref: Reference, neg_u8: np.ndarray) -> dict[str, float]:
    """Sharpness of the cropped negative (uint8) relative to the GT's, over the eroded hole."""
    grey = pm.grey(neg_u8).astype(np.float32)
    e_neg = _lap_energy(grey, ref.blur_region)
    e_gt = ref.gt_grey_lap_energy
    eps = 1e-3
    return {
        "sharpness_loss_db": 10 * math.log10((e_gt + eps) / (e_neg + eps)),
        "sharpness_ratio": (e_neg + eps) / (e_gt + eps),
        "gt_laplacian_energy": e_gt,
        "neg_laplacian_energy": e_neg,
    }


def lowpass_metrics(ref: Reference, neg_f: np.ndarray) -> dict[str, float]:
    lp_neg = _lowpass(neg_f, ref.sigma)
    a, b = lp_neg[ref.lowpass_hole], ref.gt_lowpass[ref.lowpass_hole]
    mse = float(np.square(a - b, dtype=np.float64).mean())
    psnr = _MAX_PSNR if mse <= 255.0**2 / 10 ** (_MAX_PSNR / 10) else 10 * math.log10(255.0**2 / mse)
    lab_a = cv2.cvtColor((a / 255.0).reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_RGB2Lab)
    lab_b = cv2.cvtColor((b / 255.0).reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_RGB2Lab)
    delta_e = float(np.sqrt(np.square(lab_a - lab_b, dtype=np.float64).sum(axis=-1)).mean())
    return {"lowpass_psnr_db": psnr, "lowpass_delta_e": delta_e}


def fidelity_metrics(ref: Reference, neg_f: np.ndarray) -> dict[str, float]:
    """PSNR (dB, pooled over every hole pixel of the clip) and mean SSIM over the hole (scikit-image)."""
    maps = [pm.ssim_map(ref.gt[t], neg_f[t]) if ref.hole[t].any() else None for t in range(ref.hole.shape[0])]
    ssim = pm.region_ssim(maps, ref.hole)
    return {"hole_psnr_db": pm.psnr(ref.gt[ref.hole], neg_f[ref.hole]), "hole_ssim": 1.0 if ssim is None else ssim}


def temporal_metrics(
    ref: Reference, neg_f: np.ndarray, cfg: AuditConfig, segments: Any = None
) -> dict[str, Any]:
    t = ref.hole.shape[0]
    if t < 2:
        return {"transitions": 0}
    instability = np.full(t - 1, np.nan)
    res_change = np.full(t - 1, np.nan)
    residual = neg_f - ref.gt
    for k in range(t - 1):
        region = ref.hole[k] | ref.hole[k + 1]
        if not region.any():
            continue
        instability[k], _ = pm.transition_error(neg_f[k], neg_f[k + 1], region, ref.warp_maps[k])
        res_change[k] = float(np.abs(residual[k + 1][region] - residual[k][region]).mean())
    valid = ~np.isnan(ref.gt_instability)
    if not valid.any():
        return {"transitions": 0}
    floor = cfg.instability_floor
    gt_mean = float(ref.gt_instability[valid].mean())
    neg_mean = float(instability[valid].mean())
    excess = np.where(valid, (instability - ref.gt_instability) / (gt_mean + floor), np.nan)
    peak = int(np.nanargmax(excess))
    jumps = [k + 1 for k in range(t - 1) if valid[k] and excess[k] >= cfg.flicker_weak_excess]
    out: dict[str, Any] = {
        "transitions": int(valid.sum()),
        "peak_excess": float(excess[peak]),
        "peak_frame": peak + 1,
        "instability_ratio": (neg_mean + floor) / (gt_mean + floor),
        "residual_change_ratio": (float(res_change[valid].mean()) + floor)
        / (float(ref.gt_change[valid].mean()) + floor),
        "gt_instability": gt_mean,
        "jump_frames": jumps,
        "excess_per_transition": [None if math.isnan(x) else round(float(x), 3) for x in excess],
    }
    boundaries = segment_boundaries(segments, t)
    if boundaries is not None:
        at = [excess[b - 1] for b in boundaries if valid[b - 1]]
        inside = [excess[k] for k in range(t - 1) if valid[k] and (k + 1) not in boundaries]
        out["segment_boundaries"] = boundaries
        out["boundary_excess_mean"] = float(np.mean(at)) if at else None
        out["interior_excess_mean"] = float(np.mean(inside)) if inside else None
        out["boundaries_with_jump"] = sum(b in jumps for b in boundaries)
        out["jumps_off_boundary"] = [j for j in jumps if j not in boundaries]
    return out


def parse_segments(segments: Any) -> list[tuple[int, int]] | None:
    """``(start, stop)`` pairs from meta's flicker ``segments``: ``[[0, 8], ...]`` or
    ``[{"start": 0, "stop": 8, ...}, ...]``; None when absent or malformed."""
    if not segments or not isinstance(segments, (list, tuple)):
        return None
    out = []
    try:
        for seg in segments:
            if isinstance(seg, dict):
                out.append((int(seg["start"]), int(seg["stop"])))
            else:
                out.append((int(seg[0]), int(seg[1])))
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return out


def segment_boundaries(segments: Any, num_frames: int) -> list[int] | None:
    """First frames of the segments after the first (the frames a jump lands on); None if unknown."""
    parsed = parse_segments(segments)
    if parsed is None:
        return None
    return sorted({s for s, _ in parsed if 0 < s < num_frames})


# --------------------------------------------------------------------------- verdicts

SCORE_OF: dict[str, tuple[str, bool]] = {
    "blur": ("sharpness_loss_db", True),
    "hallucination": ("lowpass_psnr_db", False),
    "flicker": ("peak_excess", True),
}
"""neg_type -> (metric that decides its verdict, whether higher means a stronger defect)."""


def thresholds(defect: str, cfg: AuditConfig) -> tuple[float, float]:
    """(weak, clear) thresholds of the metric of ``defect`` (a key of ``SCORE_OF``)."""
    if defect == "blur":
        return cfg.blur_weak_db, cfg.blur_clear_db
    if defect == "hallucination":
        return cfg.hallucination_weak_psnr, cfg.hallucination_clear_psnr
    return cfg.flicker_weak_excess, cfg.flicker_clear_excess


def defect_level(defect: str, metrics: dict[str, Any], cfg: AuditConfig) -> int | None:
    """0 (none), 1 (weak) or 2 (clear): how strongly ``metrics`` show ``defect``; None if unmeasured."""
    name, higher = SCORE_OF[defect]
    score = metrics.get(name)
    if score is None:
        return None
    weak, clear = thresholds(defect, cfg)
    if higher:
        return 2 if score >= clear else 1 if score >= weak else 0
    return 2 if score <= clear else 1 if score <= weak else 0


def verdict(neg_type: str, metrics: dict[str, Any], cfg: AuditConfig) -> tuple[str, str]:
    """(verdict, note) on whether ``neg_type`` shows its intended defect."""
    if neg_type not in SCORE_OF:  # inpaint: the model's own result, no single designed defect
        return NOT_MEASURED, f"{neg_type} has no single intended defect to verify (judged by its quality score band)"
    name = SCORE_OF[neg_type][0]
    level = defect_level(neg_type, metrics, cfg)
    if level is None:
        return NOT_MEASURED, f"{name} could not be measured (no frame transition with a hole)"
    note = ""
    if neg_type == "blur" and metrics.get("gt_laplacian_energy", 0.0) < cfg.texture_floor:
        note = "GT has almost no texture in the hole: blur cannot show here"
    return VERDICTS[level], note


def measure_negative(
    ref: Reference, neg: np.ndarray, cfg: AuditConfig, segments: Any = None
) -> dict[str, Any]:
    """All defect metrics of one negative (every type is measured for every negative)."""
    y0, y1, x0, x1 = ref.box
    neg_u8 = np.ascontiguousarray(neg[:, y0:y1, x0:x1])
    neg_f = neg_u8.astype(np.float32)
    metrics: dict[str, Any] = {}
    metrics.update(blur_metrics(ref, neg_u8))
    metrics.update(lowpass_metrics(ref, neg_f))
    metrics.update(fidelity_metrics(ref, neg_f))
    metrics.update(temporal_metrics(ref, neg_f, cfg, segments))
    return metrics
