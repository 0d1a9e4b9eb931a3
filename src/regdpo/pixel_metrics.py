"""Pixel fidelity of an inpainted clip against its ground truth. Pure numpy / OpenCV / scikit-image, no I/O.

Shared by the audit (``regdpo.audit.metrics``: a negative against its GT) and the evaluation
(``regdpo.evaluation``: a model's output against the eval set's GT), so both measure PSNR, SSIM and
frame-to-frame instability the same way.

Conventions: clips are RGB ``[T, H, W, 3]`` (``uint8``, or float32 in 0..255); ``hole`` is ``bool [T, H, W]``,
True = hole. Grey levels are 0..255. Every function is deterministic.

- PSNR: scikit-image's ``peak_signal_noise_ratio`` (``data_range`` 255), capped at ``MAX_PSNR_DB``
  (identical pixels give 100 dB, never infinity, so a mean over clips stays finite).
- SSIM: scikit-image's ``structural_similarity`` with the standard Gaussian window (sigma 1.5,
  Wang et al. 2004), channels averaged. Inside a region, SSIM is the mean of the SSIM *map* over the
  region's pixels (each map value describes the 11x11 neighbourhood of that pixel, so pixels near the
  hole's edge also see some context).
- instability of a transition t -> t+1 over a region: the smaller of the mean absolute error after
  warping frame t with the GT's DIS optical flow and the plain frame difference (content that moves with
  the scene, or stays still, is stable).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

MAX_PSNR_DB = 100.0
"""PSNR of identical pixels (the cap): reached when the MSE is below 255**2 * 1e-10."""

DEFAULT_BOUNDARY_DILATION = 7
"""Width of the hole's inner band for the boundary PSNR: 7 -> the hole pixels within 3 px of a valid pixel."""

INSTABILITY_FLOOR = 1.0
"""Grey levels added to the GT's mean instability before dividing by it (the noise floor of still scenes)."""


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """scikit-image's PSNR of two equal-shape arrays (0..255), capped at ``MAX_PSNR_DB``."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        value = float(peak_signal_noise_ratio(reference, test, data_range=255.0))
    return min(value, MAX_PSNR_DB)


def region_psnr(gt: np.ndarray, out: np.ndarray, region: np.ndarray) -> float | None:
    """PSNR pooled over every pixel of ``region`` (``bool [T, H, W]``) of the clip (one MSE over all of them);
    None when the region is empty."""
    if not region.any():
        return None
    return psnr(gt[region], out[region])


def frame_psnr_mean(gt: np.ndarray, out: np.ndarray) -> float:
    """Mean over frames of each whole frame's PSNR (the video-inpainting papers' protocol)."""
    return float(np.mean([psnr(g, o) for g, o in zip(gt, out)]))


def ssim_frame(gt: np.ndarray, out: np.ndarray) -> tuple[float, np.ndarray]:
    """(scikit-image's mean SSIM of one RGB frame pair, its SSIM map ``float [H, W]`` averaged over channels).

    Frames at least 11 px on their short side use the standard Gaussian window; smaller ones (tiny crops) the
    largest odd uniform window that fits."""
    from skimage.metrics import structural_similarity

    side = min(gt.shape[:2])
    if side >= 11:
        kwargs: dict[str, Any] = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        kwargs = {"win_size": max(3, side if side % 2 else side - 1)}
    mean, full = structural_similarity(np.asarray(gt, np.float32), np.asarray(out, np.float32), channel_axis=-1,
                                       data_range=255.0, full=True, **kwargs)
    return float(mean), full.mean(axis=-1)


def ssim_map(gt: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The SSIM map of one RGB frame pair (see ``ssim_frame``)."""
    return ssim_frame(gt, out)[1]


def region_ssim(maps: Sequence[np.ndarray], region: np.ndarray) -> float | None:
    """Mean of the per-frame SSIM maps over every pixel of ``region`` (``bool [T, H, W]``); None if empty."""
    total, count = 0.0, 0
    for t, m in enumerate(maps):
        if region[t].any():
            total += float(m[region[t]].sum(dtype=np.float64))
            count += int(region[t].sum())
    return total / count if count else None


def region_l1(gt: np.ndarray, out: np.ndarray, region: np.ndarray) -> float | None:
    """Mean absolute error over the pixels (and channels) of ``region``, in 0..1 (grey levels / 255)."""
    if not region.any():
        return None
    diff = np.abs(gt[region].astype(np.float64) - out[region].astype(np.float64))
    return float(diff.mean() / 255.0)


def inner_band(hole: np.ndarray, boundary_dilation: int = DEFAULT_BOUNDARY_DILATION) -> np.ndarray:
    """The hole's pixels within ``boundary_dilation // 2`` px (Chebyshev) of a valid pixel: the boundary ring
    of ``regions.decompose_regions`` taken on the *valid* region, i.e. the inside edge of the hole, where a
    seam shows (the ring outside the hole equals the GT after compositing)."""
    from .regions import check_kernel_size, dilate_mask_np

    valid = (~hole).astype(np.uint8)
    grown = dilate_mask_np(valid, check_kernel_size(boundary_dilation)).astype(bool)
    return grown & hole


# --------------------------------------------------------------------------- temporal

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_DIS: dict[str, Any] = {}


def dis(preset: str) -> Any:
    """One DIS optical-flow object per preset and process (creating one is not free)."""
    if preset not in _DIS:
        _DIS[preset] = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    return _DIS[preset]


def grey(clip: np.ndarray) -> np.ndarray:
    """``uint8 [T, H, W]`` grey frames of a ``uint8`` RGB clip."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip])


def warp_maps(grey_a: np.ndarray, grey_b: np.ndarray, preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps that warp frame a onto frame b: the DIS flow of b towards a,
    ``b(p) ~ a(p + flow(p))``."""
    h, w = grey_a.shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    flow = dis(preset).calc(grey_b, grey_a, None)
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def transition_error(a: np.ndarray, b: np.ndarray, region: np.ndarray, maps) -> tuple[float, float]:
    """(instability, plain change) of the transition a -> b over ``region`` (float32 ``[h, w, 3]`` frames,
    0..255): the instability is the smaller of the error after warping a with ``maps`` and the plain change."""
    plain = float(np.abs(b[region] - a[region]).mean())
    if maps is None:
        return plain, plain
    warped = cv2.remap(a, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    flowed = float(np.abs(b[region] - warped[region]).mean())
    return min(plain, flowed), plain


def hole_temporal_deviation(gt: np.ndarray, out: np.ndarray, hole: np.ndarray, floor: float = INSTABILITY_FLOOR,
                            preset: str = "medium") -> float | None:
    """How far the hole's frame-to-frame change departs from the GT's, in either direction.

    Per transition t -> t+1 with a hole in ``hole[t] | hole[t+1]``: the instability ``e`` of the output and of
    the GT over that region, both warped with the GT's flow. Returns
    ``mean_t |e_out[t] - e_gt[t]| / (mean_t e_gt[t] + floor)``: 0 = the fill moves as the GT does; flicker
    raises it, and so does a frozen fill on a moving scene. None when no transition has a hole."""
    gt_f, out_f = gt.astype(np.float32), out.astype(np.float32)
    gt_grey = grey(np.asarray(gt, np.uint8))
    e_gt, e_out = [], []
    for k in range(hole.shape[0] - 1):
        region = hole[k] | hole[k + 1]
        if not region.any():
            continue
        maps = warp_maps(gt_grey[k], gt_grey[k + 1], preset)
        e_gt.append(transition_error(gt_f[k], gt_f[k + 1], region, maps)[0])
        e_out.append(transition_error(out_f[k], out_f[k + 1], region, maps)[0])
    if not e_gt:
        return None
    gt_mean = float(np.mean(e_gt))
    deviation = float(np.mean(np.abs(np.asarray(e_out) - np.asarray(e_gt))))
    return deviation / (gt_mean + floor) if math.isfinite(deviation) else None
